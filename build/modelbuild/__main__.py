"""`python -m modelbuild COMMAND`: the build pipeline's command line (see `--help`)."""
import sys

from modelbuild import cli

sys.exit(cli.main(sys.argv[1:]))

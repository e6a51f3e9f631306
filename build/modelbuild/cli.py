"""Thin command line: parse, log what was asked, call one function, print errors as one clear line."""
from __future__ import annotations

import argparse
import sys

from modelbuild.errors import BuildError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelbuild", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("runtime", help="compile TVM's web runtime once into the cache (part of `make setup`)")
    args = parser.parse_args(argv)
    try:
        if args.command == "runtime":
            from modelbuild.toolchain import web_runtime
            web_runtime.ensure_built()
    except BuildError as error:
        print(f"error: {error.problem}\n  fix: {error.fix}", file=sys.stderr)
        return 1
    return 0

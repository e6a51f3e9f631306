"""`python -m router --host 127.0.0.1 --port 8000`: a single-process development server.
For real serving use gunicorn (`make serve`, router/gunicorn.conf.py)."""
import argparse
import os

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")  # a serving process loads TVM's runtime, not its compiler

from router import create_app  # noqa: E402

parser = argparse.ArgumentParser(prog="python -m router")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
args = parser.parse_args()
print(f"Seam is serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
create_app().run(host=args.host, port=args.port, threaded=True)

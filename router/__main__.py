"""`python -m router --host 127.0.0.1 --port 8000`: serve Seam on this machine."""
import argparse

from router import create_app

parser = argparse.ArgumentParser(prog="python -m router")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8000)
args = parser.parse_args()
print(f"Seam is serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
create_app().run(host=args.host, port=args.port, threaded=True)

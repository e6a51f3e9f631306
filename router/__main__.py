"""`python -m router --host 127.0.0.1 --port 8000` (what `make serve` runs): the app under waitress.

waitress reads each request whole (headers and body, in its event loop) before a thread sees it, and
writes answers from buffers, so a slow or idle client holds a socket, never a thread. The threads are
the chat limit plus spares (router/capacity.py): chats beyond the limit get a prompt 503, and pages,
artifacts, /healthz and /metrics always find a free thread.
"""
import argparse
import os
import threading

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")  # a serving process loads TVM's runtime, not its compiler

from router import create_app  # noqa: E402
from router.capacity import SPARE_THREADS  # noqa: E402
from router.serving import bound_the_allocator, serve  # noqa: E402


def warm_up(backend) -> None:
    """The embedded engine's measured speed, from the start (cloud.EmbeddedBackend.warm_up)."""
    if hasattr(backend, "warm_up") and backend.available:
        try:
            print(f"The server's engine, measured at its warm-up: {backend.warm_up()}", flush=True)
        except Exception as error:  # a model that cannot answer is refused per request, with the reason
            print(f"The server's engine could not warm up: {error}", flush=True)


parser = argparse.ArgumentParser(prog="python -m router")
parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
args = parser.parse_args()
bound_the_allocator()
app = create_app({"LISTEN_HOST": args.host})
limits = app.config
print(f"Seam is serving on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
threading.Thread(target=warm_up, args=(app.extensions["seam"]["cloud"],), daemon=True).start()
serve(
    app, host=args.host, port=args.port, ident="seam",
    threads=limits["MAX_QUEUE"] + SPARE_THREADS,
    connection_limit=limits["CONNECTION_LIMIT"],
    channel_timeout=limits["IDLE_TIMEOUT_S"], cleanup_interval=min(10, limits["IDLE_TIMEOUT_S"]),
    max_request_body_size=limits["MAX_CONTENT_LENGTH"],
    channel_request_lookahead=1,  # keeps reading the socket during a request: a client that left is noticed
    asyncore_use_poll=True,  # select() stops at 1024 descriptors
    # Behind a reverse proxy every client has its address: the fleet counts sources by the forwarded one.
    **({"trusted_proxy": limits["TRUSTED_PROXY"], "trusted_proxy_count": 1, "trusted_proxy_headers": {"x-forwarded-for"},
        "clear_untrusted_proxy_headers": True} if limits["TRUSTED_PROXY"] else {}),
)

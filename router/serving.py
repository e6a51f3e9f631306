"""The app under waitress, as `python -m router` serves it, with what waitress does not do itself.

- Each request's environ says how many bytes of its answer its client has not taken (`seam.unsent_bytes`):
  a chat stream no one reads stops once that passes SEAM_STREAM_BUFFER_BYTES (router/api.py), which frees
  the engine and the chat's slot at once.
- The errors waitress answers itself, before the app sees a request (a body or headers too large, a
  request it cannot parse), have the app's shape: OpenAI's error JSON and the security headers.
- The process's allocator is bounded, so its memory plateaus (bound_the_allocator).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import logging
import struct
import termios

import waitress.server
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask, WSGITask

from router.errors import error_body
from router.ops import SECURITY_HEADERS

UNSENT_BYTES = "seam.unsent_bytes"
# glibc's mallopt: at most this many malloc arenas; blocks from this size up mapped apart, and unmapped when freed
M_ARENA_MAX, ARENAS = -8, 2
M_MMAP_THRESHOLD, MMAP_FROM_BYTES = -3, 64 << 10
# What waitress's own refusals mean for a client, in the words of the app's errors.
CODES = {400: "bad_request", 413: "request_too_large", 431: "headers_too_large"}


class AnswerTask(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        channel = self.channel
        environ[UNSENT_BYTES] = lambda: unsent_bytes(channel)  # read by the answer's thread between tokens
        return environ


def unsent_bytes(channel) -> int:
    """What the client has not taken of the answer: in waitress's buffers, and in the kernel's send queue
    (TIOCOUTQ: a socket buffer grows to megabytes, so waitress's alone would take long to fill)."""
    try:
        queued, = struct.unpack("i", fcntl.ioctl(channel.socket.fileno(), termios.TIOCOUTQ, b"\0" * 4))
    except (OSError, ValueError):  # closed meanwhile (the client left, which is noticed apart)
        queued = 0
    return channel.total_outbufs_len + queued


class RefusalTask(ErrorTask):
    """waitress's ErrorTask, with the app's body and headers instead of plain text."""

    def execute(self):
        error = self.request.error
        body = json.dumps(error_body(error.code, f"{error.reason}: {error.body}", code=CODES.get(error.code))).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), *SECURITY_HEADERS.items()])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    task_class = AnswerTask
    error_task_class = RefusalTask


def bound_the_allocator() -> None:
    """A server's memory grew with every new prompt length and was never given back (0.5 to 2.6 GB over a
    session): glibc gives each thread that allocates an arena of its own, and after a large block is freed
    it raises the size from which blocks are mapped apart, so large buffers of every size a prompt needs
    stay in the arenas as holes. Two arenas and a fixed threshold keep it flat, with the engine's naive
    allocator (router/engine.py). Called before any thread starts."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallopt"):  # not glibc
        return
    if not (libc.mallopt(M_ARENA_MAX, ARENAS) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_FROM_BYTES)):
        logging.getLogger("seam").warning("could not bound the allocator (mallopt)")


def serve(app, **options) -> None:
    """waitress.serve(app, **options), on our channel."""
    server = waitress.server.create_server(app, **options)
    # One listener, or several (a name with an IPv4 and an IPv6 address) registered in the server's map.
    listeners = server.map.values() if isinstance(server, waitress.server.MultiSocketServer) else [server]
    for listener in listeners:
        if isinstance(listener, waitress.server.BaseWSGIServer):
            listener.channel_class = Channel
    server.print_listen("Serving on http://{}:{}")
    server.run()

"""The servers tests run: a folder over HTTP (StaticServer), the Flask app in a thread of this process
(AppServer, with Faults that spoil chosen responses), `make serve`'s command line in a process of its own
(seam_server), and raw HTTP for clients that misbehave below what an HTTP library lets one do.
"""
from __future__ import annotations

import functools
import http.server
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.support.repo import REPO


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".json": "application/json"}

    extra_headers: dict[str, str] = {}

    def end_headers(self):
        for name, value in self.extra_headers.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, *args):
        pass


class StaticServer:
    """Serves one folder on a random 127.0.0.1 port (a secure context, so WebGPU is exposed), with
    `headers` added to every response."""

    def __init__(self, folder: Path, headers: dict[str, str] | None = None):
        handler_class = type("Handler", (_QuietHandler,), {"extra_headers": headers or {}})
        handler = functools.partial(handler_class, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "StaticServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def seam_server(models_dir, **env):
    """`make serve`'s command line (`python -m router`, waitress) in a process of its own on a free port,
    with SEAM_* settings from `env`; yields its base URL (no trailing slash). Its log goes to a file, so a
    chatty server never blocks on a full pipe; the log is shown if it fails to start."""
    port = free_port()
    environ = {**os.environ, "SEAM_MODELS_DIR": str(models_dir), **env}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "router", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(url + "/healthz", timeout=1).ok:
                        break
                except requests.RequestException:  # not listening yet
                    time.sleep(0.1)
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the server did not start:\n{log.read()[-4000:]}")
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


# --- the app server in a thread of this process ---------------------------------------------------

class Faults:
    """WSGI middleware that spoils the next response for a path ending in a given suffix, once per rule:
    "stall" sends `at` bytes then hangs until `drop_stalled()` (or the server closes), then drops the
    connection; "flip" sends the whole body with one byte changed at `at`. `hold(suffix)` makes every
    request for such a path wait, before anything is sent, until the event it returns is set."""

    def __init__(self, app):
        import threading
        self.app, self.rules, self.holds, self.closing = app, [], [], threading.Event()

    def add(self, suffix: str, kind: str, at: int) -> None:
        self.rules.append((suffix, kind, at))

    def hold(self, suffix: str):
        import threading
        released = threading.Event()
        self.holds.append((suffix, released))
        return released

    def __call__(self, environ, start_response):
        for suffix, released in self.holds:
            if environ["PATH_INFO"].endswith(suffix):
                released.wait(900)
        rule = next((r for r in self.rules if environ["PATH_INFO"].endswith(r[0])), None)
        body = self.app(environ, start_response)
        if rule is None:
            return body
        self.rules.remove(rule)
        return self.spoil(body, rule[1], rule[2], environ["werkzeug.socket"])

    def spoil(self, body, kind, at, sock):
        import socket
        data = b"".join(body)
        if kind == "flip":
            yield data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
            return
        yield data[:at]
        self.closing.wait()
        sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("test fault: connection dropped")

    def drop_stalled(self) -> None:
        self.closing.set()
        for _, released in self.holds:
            released.set()


class AppServer:
    """The Flask app on a random 127.0.0.1 port, in a thread, remembering every request (path and Range
    header) it was asked for; `faults` spoils chosen responses; `config` overrides settings; `port` (default: any
    free one) lets a test start a server again where a page knew it. Its test hooks
    are on: the chat page then exposes its Seam client as `window.seam`, which the tests drive."""

    def __init__(self, models_dir: Path, test_hooks: bool = True, port: int = 0, **config):
        import re
        import tempfile
        import threading

        from flask import request
        from werkzeug.serving import make_server

        from router import create_app
        from router.config import defaults

        self.models_dir = Path(models_dir)
        self.paths: list[str] = []
        self.ranges: list[tuple[str, str | None]] = []
        self.fleet_dir = tempfile.TemporaryDirectory()
        # This machine's software adapters decode far below the policy's speed floor, and their measured
        # bandwidth is noisy around it; these tests are about the seam, so any speed is taken (the floor
        # itself is tested in tests/router/test_routing.py).
        policy = Path(self.fleet_dir.name) / "policy.toml"
        text = Path(defaults()["POLICY_FILE"]).read_text()
        assert "\nmin_tokens_per_s = " in text, "router/policy.toml no longer has min_tokens_per_s"
        policy.write_text(re.sub(r"\nmin_tokens_per_s = .*", "\nmin_tokens_per_s = 0.0", text))
        app = create_app({"MODELS_DIR": str(models_dir), "TEST_HOOKS": test_hooks, "POLICY_FILE": str(policy),
                          "FLEET_DB": f"{self.fleet_dir.name}/fleet.sqlite3", **config})

        @app.before_request
        def remember():
            self.paths.append(request.path)
            self.ranges.append((request.path, request.headers.get("Range")))

        self.faults = Faults(app.wsgi_app)
        app.wsgi_app = self.faults
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/"

    def model_paths(self, variant: str) -> list[str]:
        """The paths of one variant's files this server was asked for, in order."""
        return [p for p in self.paths if p.startswith(f"/models/{variant}/")]

    def close(self) -> None:
        """Stop serving and close the port (a client then finds nothing listening); again is a no-op."""
        self.faults.drop_stalled()
        self.server.shutdown()
        self.server.server_close()
        self.fleet_dir.cleanup()


# --- raw HTTP, for clients that misbehave below what an HTTP library lets one do ---------------------

def connect(url, source: str | None = None) -> socket.socket:
    """A connection to the server, from another loopback address where `source` names one (Linux routes all
    of 127.0.0.0/8 to the loopback device, so each is another client address to the server)."""
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10,
                                    source_address=(source, 0) if source else None)


class _FromAddress(requests.adapters.HTTPAdapter):
    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, source_address=(self.source, 0), **kwargs)


def session_from(source: str) -> requests.Session:
    """A requests session whose connections come from the loopback address `source` (see connect)."""
    session = requests.Session()
    session.mount("http://", _FromAddress(source))
    return session


def raw_post(url, path, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that crashed or lost its network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()

"""The one browser harness every browser test uses: Debian's Chromium with WebGPU, and local servers.

Chromium comes from Debian (`make setup`), never from `playwright install`. Headless Chromium gets a
WebGPU adapter on SwiftShader (no GPU here) with just `--enable-unsafe-webgpu`; the other flags keep it
from reaching for the network, which is closed on these machines. Playwright gives each browser launch
a fresh temporary profile, so no cache or storage leaks from one run into the next.
"""
from __future__ import annotations

import functools
import http.server
import json
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

import jsonschema
import requests

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # the tests run as root
    "--headless=new",
    "--enable-unsafe-webgpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Added to CHROMIUM_FLAGS, they offer a compatibility-mode adapter too: WebGPU on OpenGL ES through ANGLE
# (Mesa's llvmpipe here), which a page gets with requestAdapter({featureLevel: "compatibility"}).
COMPATIBILITY_FLAGS = ["--use-angle=gl-egl", "--use-webgpu-adapter=opengles"]
REPO = Path(__file__).resolve().parent.parent
# The router's decision, as every page test and the routing table tests check it.
DECISION = jsonschema.Draft202012Validator(
    json.loads((REPO / "router" / "schemas" / "route-decision.v1.json").read_text()))
TVMJS = REPO / "webapp" / "node_modules" / "@mlc-ai" / "web-runtime" / "lib" / "index.js"


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

"""The one browser harness every browser test uses: Debian's Chromium with WebGPU, and local servers.

Chromium comes from Debian (`make setup`), never from `playwright install`. Headless Chromium gets a
WebGPU adapter on SwiftShader (no GPU here) with just `--enable-unsafe-webgpu`; the other flags keep it
from reaching for the network, which is closed on these machines. Playwright gives each browser launch
a fresh temporary profile, so no cache or storage leaks from one run into the next.
"""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

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

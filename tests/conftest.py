"""Fixtures shared by every test: the browser harness (see tests/harness.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import CHROMIUM, CHROMIUM_FLAGS, REPO, StaticServer


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright launches Debian's Chromium with WebGPU instead of a downloaded browser."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (it installs Debian's chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_FLAGS, "headless": True}


@pytest.fixture
def expected_console_errors() -> list[str]:
    """Substrings of console errors a test provokes on purpose (a refused connection, a 404)."""
    return []


@pytest.fixture
def page(page, expected_console_errors):
    """The plugin's page, but any uncaught page error or unexpected console error fails the test."""
    problems: list[str] = []

    def console(msg):
        if msg.type == "error" and not any(e in msg.text for e in expected_console_errors):
            problems.append(f"console error: {msg.text} ({msg.location.get('url')})")

    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", console)
    yield page
    assert not problems, "the page reported errors:\n" + "\n".join(problems)


@pytest.fixture
def serve_folder():
    """Serve folders over HTTP on 127.0.0.1 for one test: `url = serve_folder(path)`."""
    servers: list[StaticServer] = []

    def start(folder: Path) -> str:
        server = StaticServer(folder).__enter__()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture(scope="session")
def default_built():
    """The real default model, built by the same code `make build-model` runs, into models/.

    The build is incremental: after `make build-model` this only checks that nothing changed.
    """
    from modelbuild import pipeline, source

    pipeline.build(pipeline.BuildOptions(model=source.default_model_path(), presets=["q4f32_1", "q4f16_1"],
                                         out_dir=REPO / "models"))
    return REPO / "models"


class Faults:
    """WSGI middleware that spoils the next response for a path ending in a given suffix, once per rule:
    "drop" sends `at` bytes then drops the connection; "stall" sends `at` bytes then hangs until the
    server closes; "flip" sends the whole body with one byte changed at `at`."""

    def __init__(self, app):
        import threading
        self.app, self.rules, self.closing = app, [], threading.Event()

    def add(self, suffix: str, kind: str, at: int) -> None:
        self.rules.append((suffix, kind, at))

    def __call__(self, environ, start_response):
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
        if kind == "stall":
            self.closing.wait()
        sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("test fault: connection dropped")


class AppServer:
    """The Flask app on a random 127.0.0.1 port, in a thread, remembering every request (path and Range
    header) it was asked for; `faults` spoils chosen responses."""

    def __init__(self, models_dir: Path, test_hooks: bool = False):
        import re
        import tempfile
        import threading

        from flask import request
        from werkzeug.serving import make_server

        from router import create_app
        from router.config import defaults

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
                          "FLEET_DB": f"{self.fleet_dir.name}/fleet.sqlite3"})

        @app.before_request
        def remember():
            self.paths.append(request.path)
            self.ranges.append((request.path, request.headers.get("Range")))

        self.faults = Faults(app.wsgi_app)
        app.wsgi_app = self.faults
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/"

    def close(self) -> None:
        self.faults.closing.set()
        self.server.shutdown()
        self.fleet_dir.cleanup()


@pytest.fixture
def app_server():
    """Start app servers over any models folder for one test: `server = app_server(folder)`."""
    servers: list[AppServer] = []

    def start(models_dir: Path, test_hooks: bool = False) -> AppServer:
        servers.append(AppServer(models_dir, test_hooks))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def live_app(default_built):
    """The Flask app serving the real models/, shared by the whole session: its base URL."""
    server = AppServer(default_built)
    yield server.url
    server.close()

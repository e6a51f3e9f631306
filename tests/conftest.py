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
def page(page):
    """The plugin's page, but any uncaught page error or console error fails the test."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console error: {msg.text} ({msg.location.get('url')})") if msg.type == "error" else None)
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


class AppServer:
    """The Flask app on a random 127.0.0.1 port, in a thread, remembering every path it was asked for."""

    def __init__(self, models_dir: Path):
        import threading

        from flask import request
        from werkzeug.serving import make_server

        from router import create_app

        self.paths: list[str] = []
        app = create_app({"MODELS_DIR": str(models_dir)})
        app.before_request(lambda: self.paths.append(request.path))
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def app_server():
    """Start app servers over any models folder for one test: `server = app_server(folder)`."""
    servers: list[AppServer] = []

    def start(models_dir: Path) -> AppServer:
        servers.append(AppServer(models_dir))
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

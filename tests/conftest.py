"""Fixtures shared by every test: the two models (tiny and real), the browser harness (tests/harness.py),
and the app server.

Two tiers. Seam *mechanics* (handover, resume, updates, quota, stop, typed errors, routing through the
page) run on the tiny random Llama, built by the same pipeline with the real tokenizer and chat
template: it loads in seconds and answers in milliseconds. *Fidelity* (browser tokens = server tokens
on the real model, the f16 variant in Firefox, the build's self-check, perplexity) runs on the real
default model. Each test is marked by what it uses, never by hand:
  real_model  uses the `default_built` fixture (the 135M model in models/),
  browser     launches a browser (Chromium through Playwright, or Firefox).
`make test PYTEST_ARGS="-m 'not browser'"` runs the rest; `-m 'not real_model'` the fast tier.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.harness import CHROMIUM, CHROMIUM_FLAGS, DECISION, REPO, StaticServer

# Fixtures that launch a browser; a test using any of them (directly or through another fixture) is `browser`.
BROWSER_FIXTURES = {"page", "context", "browser", "browser_type", "playwright", "launch_page", "firefox", "webkit"}
TINY_SHARD_MB = 1          # the tiny model's weights in several shards: resume, refetch and quota need them
# Where the tiny model is built: kept between sessions, so the build is incremental like models/ is.
TINY_DIR = Path(os.environ.get("SEAM_CACHE", Path.home() / ".cache" / "seam")) / "tests" / "tiny"
TINY_PART_BYTES = 256 << 10  # and each shard in several stored parts


def pytest_collection_modifyitems(items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "default_built" in names:
            item.add_marker(pytest.mark.real_model)
        if names & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)


# --- browsers --------------------------------------------------------------------------------------

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


class PageWatch:
    """Collects the page's uncaught errors and unexpected console errors, and every routing decision the
    page received, which `problems()` checks against the decision's schema (router/schemas)."""

    def __init__(self, page, expected: list[str]):
        self.found: list[str] = []
        self.decisions = []

        def console(msg):
            if msg.type == "error" and not any(e in msg.text for e in expected):
                self.found.append(f"console error: {msg.text} ({msg.location.get('url')})")

        page.on("pageerror", lambda error: self.found.append(f"page error: {error}"))
        page.on("console", console)
        page.on("response", lambda r: self.decisions.append(r) if r.url.endswith("/api/route") and r.ok else None)

    def problems(self) -> list[str]:
        # What the page did during the test; reading bodies below lets events of its teardown (a server
        # already stopped) arrive, which are not the test's.
        found = list(self.found)
        for response in self.decisions:
            try:
                decision = response.json()
            except PlaywrightError:  # a page that navigated away no longer holds the body
                continue
            error = jsonschema.exceptions.best_match(DECISION.iter_errors(decision))
            if error is not None:
                found.append(f"a decision breaks route-decision.v1.json at /{'/'.join(map(str, error.absolute_path))}: "
                             f"{error.message}")
        return found


@pytest.fixture
def page(page, expected_console_errors):
    """The plugin's page, but any uncaught page error or unexpected console error fails the test."""
    watch = PageWatch(page, expected_console_errors)
    yield page
    problems = watch.problems()
    assert not problems, "the page reported errors:\n" + "\n".join(problems)


@pytest.fixture
def launch_page(browser_type, expected_console_errors):
    """A page in a Chromium launched with other flags than the shared one (`add` some, `drop` some), with
    the same error checks as `page`: `page = launch_page(add=[...], drop=[...])`."""
    launched, watches = [], []

    def launch(add=(), drop=()):
        args = [flag for flag in CHROMIUM_FLAGS if flag not in drop] + list(add)
        launched.append(browser_type.launch(executable_path=CHROMIUM, args=args, headless=True))
        page = launched[-1].new_page()
        watches.append(PageWatch(page, expected_console_errors))
        return page

    yield launch
    found = [p for watch in watches for p in watch.problems()]  # before closing: it reads response bodies
    for browser in launched:
        browser.close()
    assert not found, "the page reported errors:\n" + "\n".join(found)


@pytest.fixture
def firefox():
    """Debian's Firefox ESR over WebDriver BiDi (tests/firefox.py); its console errors fail the test."""
    from tests.firefox import open_firefox

    with open_firefox() as browser:
        yield browser


@pytest.fixture(scope="session")
def adapter_label(browser) -> str:
    """The name the browser engine gives Chromium's default WebGPU adapter here (self-checks are remembered
    per adapter), asked of the engine's own code on a page of its own."""
    with StaticServer(REPO / "webapp" / "client") as static:
        page = browser.new_page()
        try:
            page.goto(static.url)
            return page.evaluate("""async () => {
                const { adapterLabel, requestGPU } = await import("/lib/engine/gpu.js");
                const gpu = await requestGPU("core");
                gpu.device.destroy();
                return adapterLabel(gpu.adapterInfo, gpu.compatibility);
            }""")
        finally:
            page.close()


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


# --- models ----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def default_built():
    """The real default model, built by the same code `make build-model` runs, into models/.

    The build is incremental: after `make build-model` this only checks that nothing changed.
    """
    from modelbuild import pipeline, source

    pipeline.build(pipeline.BuildOptions(model=source.default_model_path(), presets=["q4f32_1", "q4f16_1"],
                                         out_dir=REPO / "models"))
    return REPO / "models"


@pytest.fixture(scope="session")
def tiny_built():
    """The tiny random Llama (tests/tiny_llama.py) in q0f32, q4f32_1 and q4f16_1, with its own catalog:
    (its source folder, the models folder the app server can serve). Tests copy what they change."""
    from modelbuild import pipeline
    from tests.tiny_llama import write_tiny_llama

    folder = write_tiny_llama(TINY_DIR / "tiny-llama")  # the same bytes every time (a fixed seed)
    out = TINY_DIR / "models"
    (out / "manifest.json").unlink(missing_ok=True)  # a fresh catalog: no chain of compatible versions
    pipeline.build(pipeline.BuildOptions(model=folder, presets=["q0f32", "q4f32_1", "q4f16_1"], out_dir=out,
                                         wasm_opt="-O1", shard_mb=TINY_SHARD_MB))
    return folder, out


@pytest.fixture(scope="session")
def tiny_models(tiny_built) -> Path:
    """The tiny model's models folder (manifest.json and one folder per variant)."""
    return tiny_built[1]


def catalog_of(models_dir: Path) -> dict:
    return json.loads((models_dir / "manifest.json").read_text())


# --- the app server --------------------------------------------------------------------------------

class Faults:
    """WSGI middleware that spoils the next response for a path ending in a given suffix, once per rule:
    "stall" sends `at` bytes then hangs until `drop_stalled()` (or the server closes), then drops the
    connection; "flip" sends the whole body with one byte changed at `at`."""

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
        self.closing.wait()
        sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("test fault: connection dropped")

    def drop_stalled(self) -> None:
        self.closing.set()


class AppServer:
    """The Flask app on a random 127.0.0.1 port, in a thread, remembering every request (path and Range
    header) it was asked for; `faults` spoils chosen responses; `config` overrides settings. Its test hooks
    are on: the chat page then exposes its Seam client as `window.seam`, which the tests drive."""

    def __init__(self, models_dir: Path, test_hooks: bool = True, **config):
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
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
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


@pytest.fixture
def app_server():
    """Start app servers over any models folder for one test: `server = app_server(folder, DOWNLOAD_PART_BYTES=...)`."""
    servers: list[AppServer] = []

    def start(models_dir: Path, test_hooks: bool = True, **config) -> AppServer:
        servers.append(AppServer(models_dir, test_hooks, **config))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def tiny_server(app_server, tiny_models):
    """An app server of the tiny model's catalog for one test, its downloads in small parts; its
    `paths` and `faults` are this test's alone."""
    return app_server(tiny_models, DOWNLOAD_PART_BYTES=TINY_PART_BYTES)


@pytest.fixture(scope="session")
def live_app(default_built):
    """The Flask app serving the real models/, shared by the whole session: its base URL."""
    server = AppServer(default_built)
    yield server.url
    server.close()


@pytest.fixture
def self_check_passed(page, adapter_label):
    """Seeds `page`'s storage, before any of its scripts run, with passed self-checks of every variant
    of a catalog, with each kernel set, on this adapter, as a returning visitor's browser holds them: `self_check_passed(models)`.
    For tests whose point is not the self-check (tests/webapp/test_hybrid.py tests the self-check itself)."""
    def seed(models_dir: Path) -> None:
        passed = {f"{m['id']}@{m['version']}@{adapter_label}, {kernels} kernels": True
                  for m in catalog_of(models_dir)["models"] for kernels in m["kernels"]}
        page.add_init_script(f"""(() => {{
            const key = "seam.self-checks";
            try {{ localStorage.setItem(key, JSON.stringify({{ ...JSON.parse(localStorage.getItem(key) || "{{}}"),
                                                               ...{json.dumps(passed)} }})); }} catch (e) {{}}
        }})()""")

    return seed

"""Fixtures shared by every test: the two models (tiny and real), the browsers, and the app server; what
they run lives in tests/support.

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

from pathlib import Path

import pytest

from tests.support.browsers import (BROWSER_FIXTURES, CHROMIUM, CHROMIUM_FLAGS, PageWatch, adapter_label_of,
                                    seed_passed_self_checks)
from tests.support.models import TINY_PART_BYTES, build_default, build_tiny
from tests.support.servers import AppServer, StaticServer


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


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    """The chat page's service worker (router/shell.py) is blocked in the plugin's pages: Playwright's routing,
    which many tests use to cut or hold requests, does not see what a service worker fetches. The offline
    tests (tests/webapp/test_tabs_and_offline.py) make contexts that allow it."""
    return {**browser_context_args, "service_workers": "block"}


@pytest.fixture
def expected_console_errors() -> list[str]:
    """Substrings of console errors a test provokes on purpose (a refused connection, a 404)."""
    return []


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
        page = launched[-1].new_page(service_workers="block")  # as the plugin's pages (browser_context_args)
        watches.append(PageWatch(page, expected_console_errors))
        return page

    yield launch
    found = [p for watch in watches for p in watch.problems()]  # before closing: it reads response bodies
    for browser in launched:
        browser.close()
    assert not found, "the page reported errors:\n" + "\n".join(found)


@pytest.fixture
def firefox():
    """Debian's Firefox ESR over WebDriver BiDi (tests/support/firefox.py); its console errors fail the test."""
    from tests.support.firefox import open_firefox

    with open_firefox() as browser:
        yield browser


@pytest.fixture(scope="session")
def adapter_label(browser) -> str:
    """The name the browser engine gives Chromium's default WebGPU adapter here (self-checks are remembered
    per adapter)."""
    return adapter_label_of(browser)


@pytest.fixture
def serve_folder():
    """Serve folders over HTTP on 127.0.0.1 for one test: `url = serve_folder(path)`, or with `headers` on every
    response."""
    servers: list[StaticServer] = []

    def start(folder: Path, headers: dict[str, str] | None = None) -> str:
        server = StaticServer(folder, headers).__enter__()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.__exit__()


# --- models ----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def default_built():
    """The real default model, built by the same code `make build-model` runs, into models/ (incrementally)."""
    return build_default()


@pytest.fixture(scope="session")
def tiny_built():
    """The tiny random Llama (tests/support/tiny_llama.py) in q0f32, q4f32_1 and q4f16_1, with its own catalog:
    (its source folder, the models folder the app server can serve). Tests copy what they change."""
    return build_tiny()


@pytest.fixture(scope="session")
def tiny_models(tiny_built) -> Path:
    """The tiny model's models folder (manifest.json and one folder per variant)."""
    return tiny_built[1]


# --- the app server --------------------------------------------------------------------------------

@pytest.fixture
def app_server():
    """Start app servers over any models folder for one test: `server = app_server(folder, DOWNLOAD_PART_BYTES=...)`."""
    servers: list[AppServer] = []

    def start(models_dir: Path, test_hooks: bool = True, **config) -> AppServer:
        servers.append(AppServer(models_dir, test_hooks, **config))  # config may name a port
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
    return lambda models_dir: seed_passed_self_checks(page, adapter_label, models_dir)

"""The one browser harness every Chromium test uses: Debian's Chromium with WebGPU.

Chromium comes from Debian (`make setup`), never from `playwright install`. Headless Chromium gets a
WebGPU adapter on SwiftShader (no GPU here) with just `--enable-unsafe-webgpu`; the other flags keep it
from reaching for the network, which is closed on these machines. Playwright gives each browser launch
a fresh temporary profile, so no cache or storage leaks from one run into the next.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from playwright.sync_api import Error as PlaywrightError

from tests.support.models import catalog_of
from tests.support.repo import DECISION, REPO
from tests.support.servers import StaticServer

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
# Fixtures that launch a browser; a test using any of them (directly or through another fixture) is `browser`.
BROWSER_FIXTURES = {"page", "context", "browser", "browser_type", "playwright", "launch_page", "firefox", "webkit"}


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


def adapter_label_of(browser) -> str:
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


def seed_passed_self_checks(page, adapter_label: str, models_dir: Path) -> None:
    """Seeds `page`'s storage, before any of its scripts run, with passed self-checks of every variant of
    the catalog in `models_dir`, with each kernel set, on this adapter, as a returning visitor's browser holds them."""
    passed = {f"{m['id']}@{m['version']}@{adapter_label}, {kernels} kernels": True
              for m in catalog_of(models_dir)["models"] for kernels in m["kernels"]}
    page.add_init_script(f"""(() => {{
        const key = "seam.self-checks";
        try {{ localStorage.setItem(key, JSON.stringify({{ ...JSON.parse(localStorage.getItem(key) || "{{}}"),
                                                           ...{json.dumps(passed)} }})); }} catch (e) {{}}
    }})()""")

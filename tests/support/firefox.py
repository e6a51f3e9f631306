"""Debian's Firefox ESR with WebGPU, driven over WebDriver BiDi (a WebSocket, no geckodriver).

Playwright only drives its own patched Firefox, which cannot be downloaded here, so the tests speak
the W3C BiDi protocol directly: start a session, navigate, evaluate scripts, collect console errors.
Two prefs turn WebGPU on and allow the software adapter (Mesa lavapipe, which has `shader-f16`).
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import websocket

from tests.support.servers import free_port

FIREFOX = "/usr/bin/firefox-esr"
PREFS = {
    "dom.webgpu.enabled": True,
    "gfx.webgpu.ignore-blocklist": True,
    # A quiet, offline profile: no first-run pages, updates, telemetry or connectivity checks.
    "browser.shell.checkDefaultBrowser": False,
    "app.update.disabledForTesting": True,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.aboutwelcome.enabled": False,
}


class BiDiError(RuntimeError):
    pass


class Firefox:
    """One headless Firefox with a fresh profile and one tab. Use as a context manager."""

    def __init__(self, timeout_s: float = 900, prefs: dict | None = None):
        self.profile = tempfile.mkdtemp(prefix="seam-firefox-")
        with open(f"{self.profile}/user.js", "w") as user_js:
            user_js.writelines(f'user_pref("{name}", {json.dumps(value)});\n'
                               for name, value in {**PREFS, **(prefs or {})}.items())
        port = free_port()
        self.process = subprocess.Popen([FIREFOX, "--headless", "--no-remote", "--profile", self.profile,
                                         f"--remote-debugging-port={port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ws = _connect(f"ws://127.0.0.1:{port}/session", timeout_s, self.process)
        self.ids = itertools.count(1)
        self.console_errors: list[str] = []
        self.command("session.new", {"capabilities": {}})
        self.command("session.subscribe", {"events": ["log.entryAdded"]})
        self.context = self.command("browsingContext.getTree", {})["contexts"][0]["context"]

    def __enter__(self) -> "Firefox":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.command("session.end", {})
        except Exception:  # noqa: BLE001 - the browser may already be gone; closing must not fail the test
            pass
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def command(self, method: str, params: dict) -> dict:
        command_id = next(self.ids)
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "log.entryAdded":
                entry = message["params"]
                if entry.get("level") == "error":
                    self.console_errors.append(entry.get("text", ""))
            elif message.get("id") == command_id:
                if message.get("type") == "error":
                    raise BiDiError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    def goto(self, url: str) -> None:
        self.command("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})
        # Seen once under load: "complete" answered before the new document's scripts had run.
        self.evaluate("""async (url) => { while (location.href !== url || document.readyState !== "complete")
                                            await new Promise((r) => setTimeout(r, 50)); }""", url)

    def new_tab(self, url: str) -> None:
        """Open another tab of this profile at `url`; goto and evaluate act on it from now on."""
        self.context = self.command("browsingContext.create", {"type": "tab"})["context"]
        self.goto(url)

    def evaluate(self, function: str, arg=None):
        """Call an (async) JS function with one JSON argument; returns its JSON result."""
        expression = f"(async () => JSON.stringify(await ({function})({json.dumps(arg)})))()"
        result = self.command("script.evaluate", {"expression": expression, "target": {"context": self.context},
                                                  "awaitPromise": True})
        if result.get("type") == "exception":
            details = result["exceptionDetails"]
            raise BiDiError(f"{details.get('text')} (line {details.get('lineNumber')})")
        value = result["result"].get("value")  # absent when the function returned undefined
        return None if value is None else json.loads(value)


# A Firefox as most users have it on Linux and macOS: no WebGPU.
WEBGPU_OFF = {"dom.webgpu.enabled": False}
# And one without WebAssembly SIMD: ESR 153 has no pref for SIMD alone, so WebAssembly is off altogether
# (as locked-down setups do, e.g. Edge's enhanced security mode).
WASM_SIMD_OFF = {**WEBGPU_OFF, "javascript.options.wasm": False}


@contextmanager
def open_firefox(prefs: dict | None = None):
    """A Firefox for a test (or a module of tests), with `prefs` over PREFS; console errors it logged fail
    the test."""
    if not Path(FIREFOX).exists():
        raise AssertionError(f"{FIREFOX} is missing: run `make setup` (it installs Debian's firefox-esr)")
    with Firefox(prefs=prefs) as browser:
        yield browser
        assert browser.console_errors == [], browser.console_errors



def _connect(url: str, timeout_s: float, process: subprocess.Popen):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BiDiError(f"{FIREFOX} exited with {process.returncode} before its BiDi endpoint came up")
        try:
            return websocket.create_connection(url, timeout=timeout_s, suppress_origin=True)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise BiDiError(f"{FIREFOX} did not open its BiDi endpoint within 30 s")

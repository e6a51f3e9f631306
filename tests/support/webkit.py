"""Safari's engine: Debian's WebKitGTK (its GTK3 MiniBrowser), driven over classic WebDriver (plain HTTP).

WebKitWebDriver needs a display, so the harness starts Xvfb on a free display number first; both are
stopped when the browser closes. The driver gives no console access, so the page records its own errors
(`webapp/static/js/test_hooks.js`, served only with SEAM_TEST_HOOKS) and the harness reads them. Every
call has a timeout: a driver that does not answer fails the test within 30 s instead of hanging the suite.
WebKitGTK has no WebGPU on Linux: it is the "Safari without WebGPU" visitor (see ../shared/docs/TOOLCHAIN.md).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.servers import free_port

MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"
DRIVER = "/usr/bin/WebKitWebDriver"
XVFB = "/usr/bin/Xvfb"
CALL_TIMEOUT_S = 30  # every WebDriver call, and starting Xvfb and the driver: a hung one fails, never hangs
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # WebDriver's key for an element reference
ENTER = "\ue007"


class WebKitError(RuntimeError):
    pass


class WebKit:
    """One MiniBrowser session on its own Xvfb display. Use as a context manager. `xvfb` and `driver` are
    the commands to start (a test of the harness itself gives broken ones)."""

    def __init__(self, xvfb: str = XVFB, driver: str = DRIVER, timeout_s: float = CALL_TIMEOUT_S):
        self.processes: list[subprocess.Popen] = []
        self.session = None
        self.errors: list[str] = []  # what pages recorded before the browser left them
        self.timeout_s = timeout_s
        try:
            display = self._start_display(xvfb)
            port = free_port()
            self.base = f"http://127.0.0.1:{port}"
            self._spawn([driver, f"--port={port}"], {**os.environ, "DISPLAY": display})
            self._wait_for_driver(driver)
            capabilities = {"alwaysMatch": {"webkitgtk:browserOptions": {"binary": MINIBROWSER, "args": ["--automation"]}}}
            self.session = self._call("POST", "/session", {"capabilities": capabilities})["sessionId"]
            self._call("POST", self._at("/timeouts"), {"script": int(timeout_s * 1000), "pageLoad": int(timeout_s * 1000)})
        except BaseException:
            self.close()
            raise

    def _start_display(self, xvfb: str) -> str:
        for number in range(99, 140):  # the first free display number
            if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
                break
        display = f":{number}"
        server = self._spawn([xvfb, display, "-screen", "0", "1280x900x24", "-nolisten", "tcp"], os.environ)
        deadline = time.monotonic() + self.timeout_s
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise WebKitError(f"{xvfb} did not start the display {display} within {self.timeout_s:.0f} s "
                                  f"(exit code {server.poll()}): WebKitWebDriver needs a display")
            time.sleep(0.05)
        return display

    def _spawn(self, command: list[str], env) -> subprocess.Popen:
        self.processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self.processes[-1]

    def _wait_for_driver(self, driver: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.processes[-1].poll() is not None:
                raise WebKitError(f"{driver} exited with {self.processes[-1].returncode} before it answered")
            try:
                requests.get(self.base + "/status", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise WebKitError(f"{driver} did not answer within {self.timeout_s:.0f} s")

    def _at(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def _call(self, method: str, path: str, body: dict | None = None, timeout_s: float | None = None):
        timeout_s = timeout_s or self.timeout_s
        try:
            response = requests.request(method, self.base + path, json=body, timeout=timeout_s)
        except requests.Timeout:
            raise WebKitError(f"the WebDriver did not answer {method} {path} within {timeout_s:.0f} s") from None
        value = response.json().get("value")
        if response.status_code != 200:
            raise WebKitError(f"{method} {path}: {value.get('error')}: {value.get('message')}")
        return value

    def close(self) -> None:
        if self.session:
            try:
                self._call("DELETE", self._at(""), timeout_s=10)
            except (WebKitError, requests.RequestException):  # the browser may already be gone
                pass
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def __enter__(self) -> "WebKit":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what tests do -------------------------------------------------------------------------------
    def goto(self, url: str) -> None:
        self.keep_page_errors()
        self._call("POST", self._at("/url"), {"url": url})

    def reload(self) -> None:
        self.keep_page_errors()
        self._call("POST", self._at("/refresh"), {})

    def evaluate(self, function: str, arg=None):
        """Call an (async) JS function with one JSON argument; returns its JSON result. It must finish within
        the call timeout: waits longer than that are `wait_for`'s, polling."""
        script = ("const done = arguments[arguments.length - 1];"
                  f"Promise.resolve().then(() => ({function})({json.dumps(arg)}))"
                  ".then((value) => done(JSON.stringify({ value: value ?? null })),"
                  " (error) => done(JSON.stringify({ error: String(error && error.stack || error) })));")
        result = json.loads(self._call("POST", self._at("/execute/async"), {"script": script, "args": []},
                                       timeout_s=self.timeout_s + 5))
        if "error" in result:
            raise WebKitError(f"the page's script failed: {result['error']}")
        return result["value"]

    def wait_for(self, predicate: str, timeout_s: float = 60, arg=None):
        """Poll the JS function `predicate(arg)` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.evaluate(predicate, arg)):
            if time.monotonic() > deadline:
                raise WebKitError(f"not within {timeout_s} s: {predicate}")
            time.sleep(0.1)
        return value

    def element(self, css: str) -> str:
        return self._call("POST", self._at("/element"), {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self._call("POST", self._at(f"/element/{self.element(css)}/click"), {})

    def type(self, css: str, text: str) -> None:
        self._call("POST", self._at(f"/element/{self.element(css)}/value"), {"text": text})

    def clear(self, css: str) -> None:
        self._call("POST", self._at(f"/element/{self.element(css)}/clear"), {})

    def page_errors(self) -> list[str]:
        """What the page's test hook recorded (uncaught errors, rejections, console errors, its workers'
        too), after what earlier pages of this browser recorded."""
        return self.errors + self.evaluate(
            "async () => location.protocol === 'about:' ? [] : window.seamPageErrors ?? "
            "['the page has no test hooks: serve it with SEAM_TEST_HOOKS']")

    def keep_page_errors(self) -> None:
        self.errors = self.page_errors()


@contextmanager
def open_webkit():
    """A WebKit for a test (or a module of tests); errors its pages recorded fail the test."""
    for tool, package in ((MINIBROWSER, "webkit2gtk-driver"), (DRIVER, "webkit2gtk-driver"), (XVFB, "xvfb")):
        if not Path(tool).exists() or (tool == XVFB and not shutil.which("xauth")):
            raise AssertionError(f"{tool} is missing: run `make setup` (it installs Debian's {package}, xvfb and xauth)")
    with WebKit() as browser:
        yield browser
        errors = browser.page_errors()
        assert errors == [], errors

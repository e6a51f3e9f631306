"""The engines under measurement. Each has start(), run(workload) -> numbers, close(), and `device`.

- ServerEngine: the server's CPU engine (router/engine.py), in this process, timed around each token.
- BrowserEngine: the page's engine (Web Worker, tvmjs, WebGPU) in headless Chromium, against the real
  server over HTTP; its own stats (performance.now() in the worker) are what it reports.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")  # the runtime library, as the server loads it

from router.engine import Engine, Sampling  # noqa: E402
from router.grammar import parse_response_format  # noqa: E402

VARIANT = "SmolLM2-135M-Instruct-q4f32_1"  # the variant both engines can run here (SwiftShader lacks f16)


def catalog_entry(models: Path) -> dict:
    catalog = json.loads((models / "manifest.json").read_text())
    return next(m for m in catalog["models"] if m["id"] == VARIANT)


class ServerEngine:
    name = "server"

    def __init__(self, models: Path):
        self.models = models

    def start(self) -> None:
        entry = catalog_entry(self.models)
        self.engine = Engine(self.models / entry["path"], entry)
        self.device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"

    def run(self, workload) -> dict:
        prompt = self.engine.prompt_ids(workload.messages)
        fmt = parse_response_format(workload.response_format)
        constraint = self.engine.constraint(fmt) if fmt else None
        started = time.perf_counter()
        first = last = None
        for chunk in self.engine.generate(prompt, Sampling(max_tokens=workload.max_tokens, temperature=0),
                                          constraint=constraint):
            now = time.perf_counter()
            first = first or now
            last = chunk
        ended = time.perf_counter()
        result = timings(len(prompt), last.completion_tokens, started, first, ended)
        if constraint:
            result["grammar_ms_per_token"] = 1000 * constraint.seconds / max(1, last.completion_tokens)
        return result

    def close(self) -> None:
        pass


def timings(prompt_tokens: int, tokens: int, started: float, first: float, ended: float) -> dict:
    """TTFT includes prefill; decode speed counts the tokens after the first over the time after it."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "ttft_s": first - started,
            "prefill_tokens_per_s": prompt_tokens / (first - started),
            "decode_tokens_per_s": (tokens - 1) / (ended - first) if tokens > 1 else float("nan")}


RUN = """async (request) => {
  const r = await window.seam.browserEngine().chat.completions.create(request);
  const s = r.seam.stats;
  return { prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens, ttft_s: s.ttft_s,
           prefill_tokens_per_s: s.prefill_tokens_per_s, decode_tokens_per_s: s.decode_tokens_per_s,
           ...(s.grammar_ms_per_token === undefined ? {} : { grammar_ms_per_token: s.grammar_ms_per_token }) };
}"""
LOAD = """async (modelId) => {
  const model = window.seam.config.models.find((m) => m.id === modelId);
  return (await window.seam.browserEngine().load(model)).adapter;
}"""


class BrowserEngine:
    name = "browser"

    def __init__(self, models: Path):
        self.models = models

    def start(self) -> None:
        from playwright.sync_api import sync_playwright
        from werkzeug.serving import make_server

        from router import create_app
        from tests.harness import CHROMIUM, CHROMIUM_FLAGS

        self.fleet = tempfile.TemporaryDirectory()
        app = create_app({"MODELS_DIR": str(self.models), "FLEET_DB": f"{self.fleet.name}/fleet.sqlite3"})
        for name in ("werkzeug", "seam.requests"):  # a line per file request would bury the bench's own
            logging.getLogger(name).setLevel(logging.WARNING)
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        self.page = self.browser.new_page()
        # The page routes and prefetches by itself; here the bench decides what loads, and when.
        self.page.route("**/api/route", lambda route: route.abort())
        self.page.goto(f"http://127.0.0.1:{self.server.server_port}/")
        self.device = f"WebGPU: {self.page.evaluate(LOAD, VARIANT)}"

    def run(self, workload) -> dict:
        return self.page.evaluate(RUN, workload.request())

    def close(self) -> None:
        if hasattr(self, "browser"):
            self.browser.close()
            self.playwright.stop()
        if hasattr(self, "server"):
            self.server.shutdown()
            self.fleet.cleanup()

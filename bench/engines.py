"""The engines under measurement. Each has start(), run(workload) -> numbers, close(), and `device`.

- ServerEngine: the server's CPU engine (router/engine.py), in this process, timed around each token.
- BrowserEngine: the page's engine (Web Worker, tvmjs) in headless Chromium, against the real server over
  HTTP, on WebGPU (one adapter, core or compatibility, with one kernel set, software or gpu) or on the
  CPU (the variant's wasm SIMD build, kernels "cpu"); its own stats (performance.now() in the worker)
  are what it reports.
- The peers: TransformersJsEngine (transformers.js in the same Chromium), WllamaEngine (llama.cpp in
  wasm, in the same Chromium) and LlamaCppEngine (llama.cpp natively).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")  # the runtime library, as the server loads it

from router.engine import Engine  # noqa: E402
from router.grammar import parse_response_format  # noqa: E402
from router.tools import for_template, parse_tools  # noqa: E402
from router.sampling import Sampling  # noqa: E402
from router.threads import available_cores, use_threads  # noqa: E402
from bench.workloads import run_chat  # noqa: E402

VARIANT = "SmolLM2-135M-Instruct-q4f32_1"  # the variant both engines can run here (SwiftShader lacks f16)
FIRST_TOKEN = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}


def weight_bytes(models: Path, entry: dict) -> int:
    index = json.loads((models / entry["path"] / entry["files"]["tensor_cache"]).read_text())
    return sum(record["nbytes"] for shard in index["records"] for record in shard["records"])


def catalog_entry(models: Path) -> dict:
    catalog = json.loads((models / "manifest.json").read_text())
    return next(m for m in catalog["models"] if m["id"] == VARIANT)


class ServerEngine:
    name = "server"
    seam = True  # runs the Seam-only workloads (structured output)

    def __init__(self, models: Path):
        self.models = models
        self.conversations = itertools.count(1)

    def start(self) -> None:
        self.entry = catalog_entry(self.models)
        threads = use_threads(0)  # as the server does: every core this process may use
        self.engine = Engine(self.models / self.entry["path"], self.entry)
        self.device = f"CPU ({threads} thread{'s' if threads > 1 else ''})"

    def run(self, workload) -> dict:
        if workload.kind == "load":  # a new engine (library, weights) to its first token; no cache to be cold
            started = time.perf_counter()
            self.engine = Engine(self.models / self.entry["path"], self.entry)
            loaded = time.perf_counter()
            return {"warm_load_s": loaded - started + self.answer(workload.request())["ttft_s"]}
        if workload.kind == "chat":
            return run_chat(self.answer, workload, tag=next(self.conversations))
        return self.answer(workload.request())

    def answer(self, request: dict) -> dict:
        tools = parse_tools(request)
        messages, template_tools = for_template(request["messages"], tools, self.engine.tool_format)
        prompt = self.engine.prompt_ids(messages, tools=template_tools)
        fmt = parse_response_format(request.get("response_format"))
        constraint = self.engine.tool_constraint(tools) if tools else self.engine.constraint(fmt) if fmt else None
        sampling = Sampling(max_tokens=request["max_tokens"], temperature=request["temperature"],
                            top_p=request.get("top_p", 1.0), seed=request.get("seed"))
        started = time.perf_counter()
        first = last = None
        text = []
        for chunk in self.engine.generate(prompt, sampling, constraint=constraint):
            now = time.perf_counter()
            first = first or now
            last = chunk
            text.append(chunk.text)
        ended = time.perf_counter()
        result = timings(len(prompt), last.completion_tokens, started, first, ended)
        result.update(text="".join(text), cached_tokens=last.cached_tokens)
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


# Through the chat page's Seam client (its public API; the page exposes it as window.seam with test hooks on).
RUN = """async (request) => {
  const r = await window.seam.chat.completions.create(request);
  const s = r.seam.stats;
  return { prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens, ttft_s: s.ttft_s,
           prefill_tokens_per_s: s.prefill_tokens_per_s, decode_tokens_per_s: s.decode_tokens_per_s,
           cached_tokens: s.cached_tokens ?? 0, text: r.choices[0].message.content, target: r.seam.target,
           ...(s.grammar_ms_per_token === undefined ? {} : { grammar_ms_per_token: s.grammar_ms_per_token }) };
}"""
# The roofline's denominator: a read-bandwidth kernel (the page's own probe) over 64 MiB, more than any
# GPU cache holds, in the same browser as the engine.
BANDWIDTH = """async (featureLevel) => {
  const { measureBandwidth } = await import("/client/lib/probe.js");
  const device = await (await navigator.gpu.requestAdapter({ featureLevel })).requestDevice();
  const { bandwidth_gbps } = await measureBandwidth(device, 64 * 1024 * 1024, 8);
  device.destroy();
  return bandwidth_gbps;
}"""
# Load (download or cache, verify, compile, weights to the GPU, and on a first visit the self-check) and
# answer one token, as a user of the page waits for it.
LOAD = """async ({ modelId, request }) => {
  while (!window.seam) await new Promise((r) => setTimeout(r, 10));
  const started = performance.now();
  const engine = await window.seam.prepare({ variant: modelId });
  await window.seam.chat.completions.create({ ...request, max_tokens: 1 });
  return { adapter: engine.adapter, kernels: engine.kernels, seconds: (performance.now() - started) / 1000 };
}"""


_playwright = None  # one per thread is all Playwright's sync API allows: the browser engines share it


def launch(flags=()):
    """The tests' Chromium (Debian's, WebGPU on), plus SEAM_BENCH_CHROMIUM_FLAGS: on a machine with a real
    GPU, bench/gpu.sh passes the flags that put WebGPU on Vulkan instead of SwiftShader."""
    global _playwright
    from playwright.sync_api import sync_playwright

    from tests.support.browsers import CHROMIUM, CHROMIUM_FLAGS

    _playwright = _playwright or sync_playwright().start()
    extra = os.environ.get("SEAM_BENCH_CHROMIUM_FLAGS", "").split()
    return _playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *flags, *extra])


def stop_playwright() -> None:
    global _playwright
    if _playwright:
        _playwright.stop()
        _playwright = None


def fresh_page(browser, url: str):
    """A page in a new browser context: its own empty cache, as on a first visit."""
    context = browser.new_context()
    page = context.new_page()
    page.route("**/api/route", lambda route: route.abort())  # the bench, not the page, decides what loads
    page.goto(url)
    return context, page


def cold_and_warm(browser, url: str, script: str, argument) -> dict:
    """Load to first token on a first visit (empty cache), then after a reload (from the cache)."""
    context, page = fresh_page(browser, url)
    try:
        cold = page.evaluate(script, argument)["seconds"]
        page.reload()
        warm = page.evaluate(script, argument)["seconds"]
    finally:
        context.close()
    return {"cold_load_s": cold, "warm_load_s": warm}


class BrowserEngine:
    seam = True  # runs the Seam-only workloads (structured output)

    def __init__(self, models: Path, feature_level: str = "core", kernels: str = "software", threads: int | None = None):
        """`threads`: the CPU build's (default: every core)."""
        self.models = models
        self.feature_level = feature_level
        self.name = (("browser" if feature_level == "core" else "browser (compat)") + f" · {kernels}"
                     + (f" {threads}t" if threads else ""))
        self.on_cpu = kernels == "cpu"
        self.conversations = itertools.count(1)
        self.query = (f"?kernels={kernels}" + ("&webgpu=compatibility" if feature_level == "compatibility" else "")
                      + (f"&threads={threads}" if threads else ""))

    def start(self) -> None:
        from werkzeug.serving import make_server

        from router import create_app
        from tests.support.browsers import COMPATIBILITY_FLAGS

        self.fleet = tempfile.TemporaryDirectory()
        app = create_app({"MODELS_DIR": str(self.models), "FLEET_DB": f"{self.fleet.name}/fleet.sqlite3",
                          "TEST_HOOKS": True})  # the page's Seam client as window.seam
        for name in ("werkzeug", "seam.requests"):  # a line per file request would bury the bench's own
            logging.getLogger(name).setLevel(logging.WARNING)
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        compatibility = self.feature_level == "compatibility"  # the page asks for it first with the query
        self.browser = launch(COMPATIBILITY_FLAGS if compatibility else ())
        self.url = f"http://127.0.0.1:{self.server.server_port}/{self.query}"
        self.context, self.page = fresh_page(self.browser, self.url)
        if not self.on_cpu:  # (the CPU build has no roofline of its own: its bandwidth is wasm's, one thread)
            self.bandwidth_gbps = self.page.evaluate(BANDWIDTH, self.feature_level)
        loaded = self.page.evaluate(LOAD, {"modelId": VARIANT, "request": FIRST_TOKEN})
        self.device = loaded["adapter"] if self.on_cpu else f"WebGPU: {loaded['adapter']}, {loaded['kernels']} kernels"
        self.entry = catalog_entry(self.models)

    def roofline(self, context_tokens: float) -> dict | None:
        """Decode reads every weight once per token (the tied embedding is the output layer) plus the KV
        cache so far; memory bandwidth bounds it at bandwidth / bytes. (None on the CPU: not measured.)"""
        if self.on_cpu:
            return None
        config = json.loads((self.models / self.entry["path"] / "mlc-chat-config.json").read_text())
        c = config["model_config"]
        kv = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * c["head_dim"] * 4 * context_tokens
        per_token = weight_bytes(self.models, self.entry) + kv
        return {"bandwidth_gbps": self.bandwidth_gbps, "bytes_per_token": per_token,
                "tokens_per_s": self.bandwidth_gbps * 1e9 / per_token}

    def run(self, workload) -> dict:
        if workload.kind == "load":
            return cold_and_warm(self.browser, self.url, LOAD, {"modelId": VARIANT, "request": workload.request()})
        if workload.kind == "chat":
            return run_chat(lambda request: self.page.evaluate(RUN, request), workload, tag=next(self.conversations))
        return self.page.evaluate(RUN, workload.request())

    def close(self) -> None:
        if hasattr(self, "browser"):
            self.browser.close()
        if hasattr(self, "server"):
            self.server.shutdown()
            self.fleet.cleanup()


# --- peers ----------------------------------------------------------------------------------------------

class StaticSitePeer:
    """A peer that runs in a page of its own: a temporary site of links to its files, served locally,
    in the bench's Chromium."""

    def open_site(self, links: dict[str, Path], headers: dict[str, str] | None = None) -> str:
        from tests.support.servers import StaticServer

        self.site = tempfile.TemporaryDirectory()
        root = Path(self.site.name)
        for name, target in links.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(target)
        (root / "index.html").write_text(f"<!doctype html><title>{self.name} bench</title>")
        self.server = StaticServer(root, headers).__enter__()
        self.browser = launch()
        self.context, self.page = fresh_page(self.browser, self.server.url)
        return self.server.url

    def close(self) -> None:
        if hasattr(self, "browser"):
            self.browser.close()
        if hasattr(self, "server"):
            self.server.__exit__(None, None, None)
            self.site.cleanup()


# transformers.js from the served bundle, reading only the served model folder; ORT's wasm files, which
# the bundle would fetch from a CDN, are served too. `window.loaded[device]` keeps the model for the runs.
TRANSFORMERS_JS_LOAD = """async ({ device, request, modelId }) => {
  const T = (window.transformers ??= await import("/tjs/transformers.js"));
  Object.assign(T.env, { allowLocalModels: true, allowRemoteModels: false, localModelPath: "/models/" });
  T.env.backends.onnx.wasm.wasmPaths = { mjs: "/ort/ort-wasm-simd-threaded.asyncify.mjs",
                                         wasm: "/ort/ort-wasm-simd-threaded.asyncify.wasm" };
  const started = performance.now();
  const tokenizer = await T.AutoTokenizer.from_pretrained(modelId);
  const model = await T.AutoModelForCausalLM.from_pretrained(modelId, { device, dtype: "q4" });
  const inputs = tokenizer.apply_chat_template(request.messages, { add_generation_prompt: true, return_dict: true });
  await model.generate({ ...inputs, max_new_tokens: 1, do_sample: false });
  (window.loaded ??= {})[device] = { tokenizer, model };
  return { seconds: (performance.now() - started) / 1000 };
}"""
TRANSFORMERS_JS_RUN = """async ({ device, request }) => {
  const T = window.transformers;
  const { tokenizer, model } = window.loaded[device];
  const inputs = tokenizer.apply_chat_template(request.messages, { add_generation_prompt: true, return_dict: true });
  let tokens = 0, promptSeen = false, first = null, last = null;
  class Clock extends T.BaseStreamer {  // put() gets the prompt once, then each new token
    put() { if (!promptSeen) { promptSeen = true; return; } last = performance.now(); first ??= last; tokens++; }
    end() {}
  }
  const started = performance.now();
  await model.generate({ ...inputs, max_new_tokens: request.max_tokens, min_new_tokens: request.max_tokens,
                         do_sample: false, streamer: new Clock() });
  const prompt = inputs.input_ids.dims.at(-1);
  return { prompt_tokens: prompt, completion_tokens: tokens, ttft_s: (first - started) / 1000,
           prefill_tokens_per_s: prompt / ((first - started) / 1000),
           decode_tokens_per_s: (tokens - 1) / ((last - first) / 1000) };
}"""


class TransformersJsEngine(StaticSitePeer):
    """transformers.js v4 in the same Chromium, on WebGPU or its wasm backend, with the ONNX export of the
    same weights (4-bit MatMulNBits)."""

    seam = False

    def __init__(self, device: str, peer, model_peer):
        self.name, self.device_kind = f"transformers.js {device}", device
        self.peer, self.model_peer = peer, model_peer
        self.device = device

    def start(self) -> None:
        for peer in (self.peer, self.model_peer):
            if not peer.ready:
                raise RuntimeError(peer.error)
        model = self.model_peer.paths["model"]
        self.open_site({"tjs": self.peer.paths["bundle"], "ort": self.peer.paths["ort"], f"models/{model.name}": model})
        self.page.evaluate(TRANSFORMERS_JS_LOAD, self.argument(FIRST_TOKEN))

    def argument(self, request: dict) -> dict:
        return {"device": self.device_kind, "request": request, "modelId": self.model_peer.paths["model"].name}

    def run(self, workload) -> dict:
        if workload.kind == "load":
            return cold_and_warm(self.browser, self.server.url, TRANSFORMERS_JS_LOAD, self.argument(workload.request()))
        return self.page.evaluate(TRANSFORMERS_JS_RUN, self.argument(workload.request()))


# wllama from its npm package, on the same GGUF file the build reads; the page is cross-origin isolated
# (COOP/COEP), so wllama can run its multi-thread build, with a thread per core (its default, half the
# cores, is one thread here). CPU only (n_gpu_layers 0): its WebGPU backend on a software adapter is not
# what a user of wllama gets. `window.wllama` keeps the model for the runs.
WLLAMA_LOAD = """async ({ request, threads }) => {
  const { Wllama } = await import("/wllama/index.js");
  const started = performance.now();
  const wllama = new Wllama({ default: "/wllama/wasm/wllama.wasm" }, { suppressNativeLog: true });
  await wllama.loadModelFromUrl(location.origin + "/model.gguf",
                                { n_ctx: 2048, n_gpu_layers: 0, n_threads: threads ?? navigator.hardwareConcurrency, useCache: true });
  await wllama.createChatCompletion({ messages: request.messages, max_tokens: 1, temperature: 0 });
  window.wllama = wllama;
  return { seconds: (performance.now() - started) / 1000, threads: wllama.getNumThreads() };
}"""
WLLAMA_RUN = """async (request) => {
  let first = null, last = null, timings = null;
  const started = performance.now();
  const stream = await window.wllama.createChatCompletion({
    messages: request.messages, max_tokens: request.max_tokens, temperature: 0, ignore_eos: true,
    cache_prompt: false, stream: true });
  for await (const chunk of stream) {  // one chunk per token; the last has llama.cpp's token counts
    if (chunk.choices?.[0]?.delta?.content) { last = performance.now(); first ??= last; }
    timings = chunk.timings ?? timings;
  }
  const prompt = timings.prompt_n, tokens = timings.predicted_n;
  return { prompt_tokens: prompt, completion_tokens: tokens, ttft_s: (first - started) / 1000,
           prefill_tokens_per_s: prompt / ((first - started) / 1000),
           decode_tokens_per_s: (tokens - 1) / ((last - first) / 1000) };
}"""
ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class WllamaEngine(StaticSitePeer):
    """wllama (llama.cpp in wasm) in the same Chromium, on the GGUF Seam builds from."""

    seam = False

    def __init__(self, peer, gguf: Path, threads: int | None = None):
        """`threads`: llama.cpp's threads (default: one per core)."""
        self.peer, self.gguf, self.threads = peer, gguf, threads
        self.name = "wllama" if threads is None else f"wllama {threads}t"
        self.device = "wasm"

    def start(self) -> None:
        if not self.peer.ready:
            raise RuntimeError(self.peer.error)
        self.open_site({"wllama": self.peer.paths["esm"], "model.gguf": self.gguf}, headers=ISOLATED)
        threads = self.page.evaluate(WLLAMA_LOAD, self.argument(FIRST_TOKEN))["threads"]
        self.device = f"wasm, {threads} thread{'s' if threads > 1 else ''} (CPU)"

    def run(self, workload) -> dict:
        if workload.kind == "load":
            return cold_and_warm(self.browser, self.server.url, WLLAMA_LOAD, self.argument(workload.request()))
        return self.page.evaluate(WLLAMA_RUN, workload.request())

    def argument(self, request: dict) -> dict:
        return {"request": request, "threads": self.threads}


class LlamaCppEngine:
    """llama.cpp on the CPU through llama-cpp-python, on the same GGUF file Seam builds from; each run is a
    process of its own in the llama.cpp venv (so its load time is measured every run)."""

    name = "llama.cpp CPU"
    seam = False

    def __init__(self, peer, gguf: Path):
        self.peer, self.gguf = peer, gguf
        self.threads = available_cores()[0]  # the server's count, so the two compare at the same one
        self.device = f"CPU ({self.threads} threads)"

    def start(self) -> None:
        if not self.peer.ready:
            raise RuntimeError(self.peer.error)

    def run(self, workload) -> dict:
        result = subprocess.run([str(self.peer.paths["python"]), str(self.peer.paths["runner"]), str(self.gguf),
                                 json.dumps({**workload.request(), "threads": self.threads})], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no output")
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        if workload.kind == "load":  # the GGUF is memory-mapped from the page cache: a warm load only
            return {"warm_load_s": measured["load_s"] + measured["ttft_s"]}
        return measured

    def close(self) -> None:
        pass

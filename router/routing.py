"""The router's policy: a pure function from (probe report, catalog variants, server state, thresholds)
to a decision {target, variant, reasons, predictions}. No Flask, no I/O: table-driven tests cover it.

Order of reasoning:
  1. Which variants could this browser run at all, and on what: WebGPU (features, buffer limits,
     memory) or the variant's CPU build (wasm SIMD, cores, memory, the 4 GB wasm heap); and for both,
     storage and the context window. Each refusal is a reason.
  2. Predict time to first token and decode speed for the best runnable variant and for the cloud:
     the browser from its own measured speeds when it reports them, else WebGPU from its bandwidth probe
     scaled by the fleet's calibration for its adapter class, the CPU build from the policy's speed for
     wasm SIMD; the cloud from the server's measured speed plus the wait in its queue. Where both WebGPU
     and the CPU build can run a variant, the faster one runs it.
  3. Apply the user's preference and the device's circumstances (battery saver, data saver, slow network,
     not yet downloaded) to pick a target: the first of TARGET_RULES that applies gives it and its reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from router.config import defaults
from router.reasons import Reason

SCHEMA_VERSION = 1  # of the decision: router/schemas/route-decision.v1.json


@dataclass
class ServerState:
    cloud_available: bool
    cloud_tokens_per_s: float | None = None  # measured by the server's own engine, when it has answered
    cloud_ttft_s: float | None = None
    queue_wait_s: float = 0.0                # how long a new chat would wait behind those in flight
    cloud_full: bool = False                 # a new chat would be refused (503) right now
    calibration: float | None = None         # the fleet's measured/predicted speed for this adapter class
    # The chat API's max_tokens when a request does not say: an answer's length when a report does not say.
    default_max_tokens: int = field(default_factory=lambda: defaults()["DEFAULT_MAX_TOKENS"])


@dataclass
class Decision:
    target: str                      # "browser", "cloud", or "none" when nothing can answer
    model: str | None
    variant: str | None              # the catalog id the browser should load (also set when prefetching)
    version: str | None
    reasons: list[dict] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)
    prefetch: bool = False           # start downloading the variant in the background
    cached: bool = False             # the browser holds a usable version (this one, or a compatible older one)
    update: dict | None = None       # {"from", "to"}: the browser holds an older version it must replace
    backend: str | None = None       # what the browser runs the variant on: "webgpu" or "cpu" (its CPU build)

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **self.__dict__}


def reason(code: Reason, message: str) -> dict:
    return {"code": code, "message": message}


# What a cause means when several variants give it in different words (their words go in `details`).
CAUSES = {Reason.MISSING_FEATURE: "this GPU lacks a WebGPU feature the model needs",
          Reason.LIMIT_TOO_SMALL: "this GPU's buffer limits are too small for the model",
          Reason.LOW_MEMORY: "the device reports too little memory for the model",
          Reason.UNRELIABLE: "the model failed on this device before",
          Reason.NO_STORAGE: "too little storage quota is left for the download",
          Reason.CONTEXT_TOO_LONG: "the conversation does not fit the model's context window",
          Reason.NO_CPU_BUILD: "the model has no CPU build",
          Reason.WASM_HEAP_TOO_SMALL: "the model does not fit WebAssembly's 4 GB memory"}

BACKENDS = ("webgpu", "cpu")
WASM32_HEAP_BYTES = 4 * 1024 ** 3


def once_per_cause(reasons: list[dict]) -> list[dict]:
    """One reason per cause, in order of first appearance: a cause every variant gives in the same words
    once, as it is; one given in different words with its general message and each variant's words under it."""
    by_code: dict[str, list[str]] = {}
    for r in reasons:
        messages = by_code.setdefault(r["code"], [])
        if r["message"] not in messages:
            messages.append(r["message"])
    return [reason(code, messages[0]) if len(messages) == 1
            else {**reason(code, CAUSES.get(code, messages[0])), "details": messages}
            for code, messages in by_code.items()]


def browser_blockers(probe: dict, variant: dict, policy: dict) -> dict[str, list[dict]]:
    """Why this browser cannot run this variant, per backend ("webgpu", "cpu"): a backend with an empty
    list can run it."""
    common = common_blockers(probe, variant)
    return {"webgpu": webgpu_blockers(probe, variant, policy) + common,
            "cpu": cpu_blockers(probe, variant, policy) + common}


def webgpu_blockers(probe: dict, variant: dict, policy: dict) -> list[dict]:
    gpu = probe["webgpu"]
    if not gpu.get("available"):
        return [reason(Reason.NO_WEBGPU, "this browser has no usable WebGPU")]
    out = []
    req = variant["requirements"]
    missing = sorted(set(req["features"]) - set(gpu.get("features", [])))
    if missing:
        out.append(reason(Reason.MISSING_FEATURE, f"{variant['id']} needs WebGPU feature {', '.join(missing)}"))
    limits = gpu.get("limits", {})
    for limit, need in (("maxStorageBufferBindingSize", req["max_storage_buffer_binding_size"]),
                        ("maxBufferSize", req["max_buffer_size"])):
        if limit in limits and limits[limit] < need:
            out.append(reason(Reason.LIMIT_TOO_SMALL, f"{limit} is {int(limits[limit])}, {variant['id']} needs {need}"))
    memory = probe.get("device_memory_gb")
    need_gb = req["estimated_gpu_memory_bytes"] * policy["browser"]["memory_headroom"] / 1e9
    if memory is not None and memory < need_gb:
        out.append(reason(Reason.LOW_MEMORY, f"the device reports {memory} GB of memory, {variant['id']} wants "
                                             f"{need_gb:.1f} GB"))
    return out


def cpu_blockers(probe: dict, variant: dict, policy: dict) -> list[dict]:
    """Why the variant's CPU build cannot run here. A probe that does not say what its wasm can do (an
    older page) is not sent to the CPU build."""
    cpu, wasm = variant.get("cpu"), probe.get("wasm")
    if not cpu:
        return [reason(Reason.NO_CPU_BUILD, f"{variant['id']} has no CPU build (only float32 presets have one)")]
    if not wasm or not wasm.get("simd"):
        return [reason(Reason.NO_WASM_SIMD, "this browser has no WebAssembly SIMD, which the CPU engine needs")]
    out = []
    if cpu["memory_bytes"] > WASM32_HEAP_BYTES:
        out.append(reason(Reason.WASM_HEAP_TOO_SMALL, f"{variant['id']} needs {cpu['memory_bytes'] / 1e9:.1f} GB "
                                                      "on the CPU, over WebAssembly's 4 GB"))
    memory = probe.get("device_memory_gb")
    need_gb = cpu["memory_bytes"] * policy["browser"]["memory_headroom"] / 1e9
    if memory is not None and memory < need_gb:
        out.append(reason(Reason.LOW_MEMORY, f"the device reports {memory} GB of memory, {variant['id']} wants "
                                             f"{need_gb:.1f} GB"))
    cores = probe.get("hardware_concurrency")
    if cores is not None and cores < policy["cpu"]["min_cores"]:
        out.append(reason(Reason.TOO_FEW_CORES, f"the device has {cores} core(s): the CPU engine would take the one "
                                                "the page needs"))
    return out


def common_blockers(probe: dict, variant: dict) -> list[dict]:
    """What stops a variant on any backend: a past failure, storage, the context window."""
    out = []
    for failed in probe.get("unreliable_models", []):
        if failed["id"] == variant["id"] and failed["version"] == variant["version"]:
            out.append(reason(Reason.UNRELIABLE, f"{variant['id']} failed on this device ({failed['reason']})"))
    storage = probe.get("storage")
    if storage and not is_cached(probe, variant):
        free = storage["quota_bytes"] - storage["usage_bytes"]
        need = min(variant["download_bytes"], variant.get("cpu", {}).get("download_bytes", variant["download_bytes"]))
        if free < need:
            out.append(reason(Reason.NO_STORAGE, f"{free / 1e6:.0f} MB of storage quota left, the download is "
                                                 f"{need / 1e6:.0f} MB"))
    tokens = probe.get("prompt_tokens", 0) + probe.get("max_tokens", 0)
    if tokens > variant["context_window_size"]:
        out.append(reason(Reason.CONTEXT_TOO_LONG, f"{tokens} tokens exceed the context window of "
                                                   f"{variant['context_window_size']}"))
    return out


def adapter_class(probe: dict) -> str | None:
    """What the fleet's calibration is kept per: the adapter's vendor and architecture, and whether it is a
    fallback (software) adapter. Normalized, so client strings become a short, plain key."""
    gpu = probe["webgpu"]
    if not gpu.get("available"):
        return None
    info = gpu.get("adapter") or {}
    return f"{plain_key(info.get('vendor', ''))}/{plain_key(info.get('architecture', ''))}" + \
        ("/fallback" if info.get("is_fallback_adapter") else "")


def plain_key(text) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")[:40] or "unknown"


def calibration_ratio(probe: dict, variant: dict, policy: dict) -> float | None:
    """This browser's measured decode speed over the bandwidth prediction, clipped to the policy's range."""
    measured, predicted = measured_speed(probe, variant), bandwidth_tokens_per_s(probe, variant, policy)
    if not measured or not predicted:
        return None
    c = policy["calibration"]
    return min(max(measured["decode_tokens_per_s"] / predicted, c["min_ratio"]), c["max_ratio"])


def held_versions(probe: dict, variant: dict) -> list[str]:
    return [c["version"] for c in probe.get("cached_models", []) if c["id"] == variant["id"]]


def cached_version(probe: dict, variant: dict) -> str | None:
    """The version of this variant the browser can run from its cache: the catalog's, or an older one the
    catalog marks compatible (same weights, tokenizer and config), so it need not download again."""
    held = held_versions(probe, variant)
    if variant["version"] in held:
        return variant["version"]
    return next((v for v in held if v in variant.get("compatible_versions", [])), None)


def is_cached(probe: dict, variant: dict) -> bool:
    return cached_version(probe, variant) is not None


def download_bytes(variant: dict, backend: str) -> int:
    return variant["cpu"]["download_bytes"] if backend == "cpu" else variant["download_bytes"]


def bandwidth_tokens_per_s(probe: dict, variant: dict, policy: dict) -> float | None:
    """Decode speed from the bandwidth probe alone: decode is memory-bound, every weight byte is read once
    per token. The fixed policy, before any calibration."""
    bench = probe.get("benchmark")
    if not bench or bench["bandwidth_gbps"] <= 0:
        return None
    return bench["bandwidth_gbps"] * 1e9 * policy["browser"]["bandwidth_efficiency"] / variant["download_bytes"]


def cpu_threads(probe: dict, variant: dict, policy: dict) -> int:
    """The threads the page's CPU build will run on (webapp/client/lib/engine/cpu_threads.js, threadsHere):
    every core up to the policy's most, where the page has shared memory and the variant a threaded build."""
    if not (variant.get("cpu", {}).get("threads") and (probe.get("wasm") or {}).get("threads")):
        return 1
    return max(1, min(probe.get("hardware_concurrency") or 1, policy["cpu"]["max_threads"]))


def measured_speed(probe: dict, variant: dict, backend: str = "webgpu") -> dict | None:
    """This browser's own measured speed for this variant version on a backend (for WebGPU any kernel
    set: the engine picks the same one again on the same adapter)."""
    return next((m for m in probe.get("measured", []) if m["id"] == variant["id"]
                 and m["version"] == variant["version"] and (m["kernels"] == "cpu") == (backend == "cpu")), None)


def predict_browser(probe: dict, variant: dict, policy: dict, calibration: float | None = None,
                    backend: str = "webgpu") -> dict | None:
    p = policy["browser"]
    measured = measured_speed(probe, variant, backend)
    if measured:
        tokens_per_s, prefill_per_s, source = measured["decode_tokens_per_s"], measured["prefill_tokens_per_s"], "measured"
    elif backend == "cpu":  # one wasm thread reads the weights at about the policy's rate on any recent CPU
        speedup = 1 + (cpu_threads(probe, variant, policy) - 1) * policy["cpu"]["thread_gain"]
        tokens_per_s = speedup * policy["cpu"]["decode_gbps"] * 1e9 / variant["cpu"]["download_bytes"]
        prefill_per_s, source = tokens_per_s * policy["cpu"]["prefill_speedup"], "predicted"
    else:
        tokens_per_s = bandwidth_tokens_per_s(probe, variant, policy)
        if tokens_per_s is None:
            return None
        source = "predicted"
        if calibration is not None:
            tokens_per_s, source = tokens_per_s * calibration, "calibrated"
        prefill_per_s = tokens_per_s * p["prefill_speedup"]
    prefill_s = probe.get("prompt_tokens", 0) / max(prefill_per_s, 1e-9)
    download_s = 0.0
    if not is_cached(probe, variant):
        downlink = (probe.get("network") or {}).get("downlink_mbps") or p["default_downlink_mbps"]
        download_s = download_bytes(variant, backend) * 8 / (downlink * 1e6)
    compile_s = p["grammar_compile_s"] if probe.get("structured") else 0.0  # its grammar, compiled in wasm
    return {"ttft_s": round(download_s + p["load_seconds"] + prefill_s + compile_s, 3),
            "tokens_per_s": round(tokens_per_s, 2), "download_s": round(download_s, 3), "source": source, "backend": backend}


def forced_backends(probe: dict) -> tuple[str, ...]:
    """The backends the page may run: the one its URL forces (?kernels=), else any."""
    forced = probe.get("kernels")
    return BACKENDS if forced is None else ("cpu",) if forced == "cpu" else ("webgpu",)


def faster_backend(probe: dict, variant: dict, backends: list[str], policy: dict, calibration: float | None):
    """The backend that runs `variant` here, and its prediction. WebGPU where only it can, or where it is
    predicted faster. A software adapter runs on this same CPU, slower than the CPU build (here 0.4-1.4
    against 12 decode tokens/s): it keeps the CPU build until it has measured itself faster."""
    predictions = {b: predict_browser(probe, variant, policy, calibration, b) for b in backends}
    if len(backends) == 1:
        return backends[0], predictions[backends[0]]
    gpu, cpu = predictions["webgpu"], predictions["cpu"]
    software = (probe["webgpu"].get("adapter") or {}).get("is_fallback_adapter")
    if gpu is None or (software and gpu["source"] != "measured"):
        return ("cpu", cpu) if software else ("webgpu", gpu)
    return ("webgpu", gpu) if gpu["tokens_per_s"] >= cpu["tokens_per_s"] else ("cpu", cpu)


def predict_cloud(probe: dict, state: ServerState, policy: dict) -> dict | None:
    if not state.cloud_available:
        return None
    c = policy["cloud"]
    seen = probe.get("measured_cloud")
    if seen:  # what this page saw of the cloud's answers, the network included
        ttft_s, tokens_per_s, source = seen["ttft_s"], seen["decode_tokens_per_s"], "measured_by_browser"
    else:
        rtt = ((probe.get("network") or {}).get("rtt_ms") or c["default_rtt_ms"]) / 1000
        measured = state.cloud_tokens_per_s is not None and state.cloud_ttft_s is not None
        ttft_s = (state.cloud_ttft_s if measured else c["default_ttft_s"]) + rtt
        tokens_per_s = state.cloud_tokens_per_s if measured else c["default_tokens_per_s"]
        source = "measured_by_server" if measured else "assumed"
    return {"ttft_s": round(ttft_s + state.queue_wait_s, 3), "tokens_per_s": round(tokens_per_s, 2),
            "queue_wait_s": round(state.queue_wait_s, 3), "source": source}


def total_seconds(prediction: dict, tokens: int) -> float:
    return prediction["ttft_s"] + tokens / max(prediction["tokens_per_s"], 1e-9)


def decide(probe: dict, variants: list[dict], state: ServerState, policy: dict) -> Decision:
    """The decision, in the order of the module's reasoning: what the browser can run and how fast, which
    version it would load, then the first target rule that applies (TARGET_RULES, in order)."""
    if not variants:
        return Decision("cloud" if state.cloud_available else "none", None, None, None,
                        [reason(Reason.NO_MODEL, "the catalog has no such model")])
    runnable, refusals = browser_options(probe, variants, policy)
    best, backends = runnable[0] if runnable else (None, None)
    backend, browser = faster_backend(probe, best, backends, policy, state.calibration) if best else (None, None)
    version, cached, update = version_to_load(probe, best)
    s = Situation(probe, state, policy, best, browser, predict_cloud(probe, state, policy), version, cached, update)
    target, why = next(choice for rule in TARGET_RULES if (choice := rule(s)))
    return Decision(target, variants[0]["model"], best["id"] if best else None, version,
                    [why] + once_per_cause(refusals + server_refusals(state)),
                    {"browser": browser, "cloud": s.cloud}, prefetch=prefetch(s, target), cached=cached,
                    update=update, backend=backend)


def browser_options(probe: dict, variants: list[dict], policy: dict) -> tuple[list[tuple[dict, list]], list[dict]]:
    """What the browser can run: each runnable variant with the backends it runs on (one already cached
    first, then the smallest download), and why the others cannot run, per allowed backend (the CPU build's
    reasons only where the page reported what its wasm can do)."""
    runnable, refusals = [], []
    for variant in variants:
        blockers = browser_blockers(probe, variant, policy)
        backends = [b for b in forced_backends(probe) if not blockers[b]]
        if backends:
            runnable.append((variant, backends))
        else:
            refusals.extend(r for b in forced_backends(probe) if b == "webgpu" or "wasm" in probe for r in blockers[b])
    runnable.sort(key=lambda vb: (not is_cached(probe, vb[0]), min(download_bytes(vb[0], b) for b in vb[1])))
    return runnable, refusals


def version_to_load(probe: dict, best: dict | None) -> tuple[str | None, bool, dict | None]:
    """Which version of the chosen variant the browser loads, whether it holds it, and the update: a usable
    cached version (the catalog's or a compatible older one) if it holds one, else the catalog's, replacing
    an older one it holds."""
    if best is None:
        return None, False, None
    usable = cached_version(probe, best)
    outdated = [v for v in held_versions(probe, best) if v != usable]
    update = {"from": outdated[0], "to": best["version"]} if outdated and not usable else None
    return usable or best["version"], bool(usable), update


def server_refusals(state: ServerState) -> list[dict]:
    """The server's part of why not: it has no cloud engine."""
    if state.cloud_available:
        return []
    return [reason(Reason.CLOUD_UNAVAILABLE, "the server has no cloud engine configured")]


@dataclass(frozen=True)
class Situation:
    """What the target rules look at, gathered once."""
    probe: dict
    state: ServerState
    policy: dict
    best: dict | None       # the variant the browser would run; None when it can run none
    browser: dict | None    # its prediction; None without a variant or a speed measurement
    cloud: dict | None      # the cloud's prediction; None when there is no cloud engine
    version: str | None     # the version the browser would load
    cached: bool            # the browser holds a usable version
    update: dict | None     # {"from", "to"}: it holds an older version it must replace

    @property
    def preference(self) -> str:
        return self.probe.get("preference", "auto")

    @property
    def floor(self) -> float:
        return self.policy["browser"]["min_tokens_per_s"]

    @property
    def too_slow(self) -> bool:
        return self.browser is not None and self.browser["tokens_per_s"] < self.floor


Choice = tuple[str, dict]  # (target, the first reason)


def by_preference(s: Situation) -> Choice | None:
    """The user's preference: the cloud only, or this device only (nothing, when it cannot run the model)."""
    if s.preference == "cloud_only":
        return "cloud" if s.cloud else "none", reason(Reason.PREFERENCE_CLOUD, "the user asked for the cloud")
    if s.preference == "local_only":
        if s.best:
            return "browser", reason(Reason.PREFERENCE_LOCAL, "the user asked to keep everything on this device")
        return "none", reason(Reason.LOCAL_IMPOSSIBLE,
                              "the user asked for local only, and this browser cannot run the model")
    return None


def by_engines(s: Situation) -> Choice | None:
    """What can answer at all: the cloud when the browser cannot run the model, the browser when there is no
    cloud engine."""
    if not s.best:
        return "cloud" if s.cloud else "none", reason(Reason.BROWSER_CANNOT_RUN, "this browser cannot run the model"
                                                      + ("" if s.cloud else ", and there is no cloud engine"))
    if not s.cloud:
        return "browser", reason(Reason.ONLY_BROWSER, "the browser is the only engine available")
    return None


def by_download(s: Situation) -> Choice | None:
    """Not cached: the download would delay this answer, so the cloud answers it (the browser downloading in
    the background when sensible; not at all when it is predicted too slow); an update says so."""
    if s.cached:
        return None
    if s.too_slow and s.preference == "auto":
        return "cloud", too_slow_reason(s, ": not downloading the model")
    background = "; downloading it in the background" if prefetch_sensible(s) else ""
    if s.update:
        return "cloud", reason(Reason.UPDATE_AVAILABLE, f"a new version of {s.best['id']} is out "
                               f"({s.update['from']} -> {s.update['to']}){background}")
    return "cloud", reason(Reason.NOT_DOWNLOADED, f"{s.best['id']} is not in this browser yet{background}")


def by_battery(s: Situation) -> Choice | None:
    """The device's state: one saving battery leaves the answer to the cloud."""
    if (s.probe.get("battery") or {}).get("saver"):
        return "cloud", reason(Reason.BATTERY_SAVER, "the device is saving battery")
    return None


def by_server_state(s: Situation) -> Choice | None:
    """The server's state: a full cloud, or a queue longer than the policy's, leaves the answer to the cached
    browser."""
    if s.state.cloud_full or s.state.queue_wait_s > s.policy["cloud"]["busy_wait_s"]:
        wait = "is at its limit" if s.state.cloud_full else f"has a {s.state.queue_wait_s:.0f} s queue"
        return "browser", reason(Reason.SERVER_BUSY, f"the server {wait}, and {s.best['id']} is cached in this browser")
    return None


def by_speed(s: Situation) -> Choice | None:
    """The speed comparison: an unmeasured browser answers; one under the floor leaves it to the cloud;
    "fastest" takes whichever is predicted to finish the answer sooner."""
    if s.browser is None:
        return "browser", reason(Reason.CACHED, f"{s.best['id']} is cached in this browser (no speed measurement)")
    if s.too_slow:
        return "cloud", too_slow_reason(s, "")
    if s.preference == "fastest":
        tokens = s.probe.get("max_tokens") or s.state.default_max_tokens
        if total_seconds(s.cloud, tokens) < total_seconds(s.browser, tokens):
            return "cloud", reason(Reason.CLOUD_FASTER, "the cloud is predicted to answer sooner")
        return "browser", reason(Reason.BROWSER_FASTER, "this browser is predicted to answer sooner")
    return None


def by_cache(s: Situation) -> Choice:
    """Otherwise the browser answers from its cache: a compatible older version, or the catalog's."""
    if s.version != s.best["version"]:
        return "browser", reason(Reason.COMPATIBLE_CACHED, f"{s.best['id']} {s.version} is cached in this browser "
                                 f"and the catalog marks it compatible with {s.best['version']}: no download needed")
    return "browser", reason(Reason.CACHED, f"{s.best['id']} is cached in this browser and fast enough")


TARGET_RULES = (by_preference, by_engines, by_download, by_battery, by_server_state, by_speed, by_cache)


def too_slow_reason(s: Situation, consequence: str) -> dict:
    return reason(Reason.BROWSER_TOO_SLOW, f"this device would give about {s.browser['tokens_per_s']} tokens/s "
                  f"({s.browser['source']}), under the {s.floor} the browser needs{consequence}")


def prefetch_sensible(s: Situation) -> bool:
    """Whether a background download is worth it: not on a device predicted too slow to use it (unless the
    user wants this device to answer), nor on a slow or metered network, nor while saving battery."""
    network, battery = s.probe.get("network") or {}, s.probe.get("battery") or {}
    slow_network = network.get("save_data") or network.get("effective_type") in s.policy["network"]["slow_types"]
    wanted = s.preference in ("fastest", "local_only") or (s.preference == "auto" and not s.too_slow)
    return bool(wanted and not slow_network and not battery.get("saver"))


def prefetch(s: Situation, target: str) -> bool:
    """Prefetch: the cloud answers, the browser could run the model but does not hold it, and it is sensible."""
    return target == "cloud" and s.best is not None and not s.cached and prefetch_sensible(s)

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
     not yet downloaded) to pick a target.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from router.config import defaults

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


def reason(code: str, message: str) -> dict:
    return {"code": code, "message": message}


# What a cause means when several variants give it in different words (their words go in `details`).
CAUSES = {"missing_feature": "this GPU lacks a WebGPU feature the model needs",
          "limit_too_small": "this GPU's buffer limits are too small for the model",
          "low_memory": "the device reports too little memory for the model",
          "unreliable": "the model failed on this device before",
          "no_storage": "too little storage quota is left for the download",
          "context_too_long": "the conversation does not fit the model's context window",
          "no_cpu_build": "the model has no CPU build",
          "wasm_heap_too_small": "the model does not fit WebAssembly's 4 GB memory"}

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
        return [reason("no_webgpu", "this browser has no usable WebGPU")]
    out = []
    req = variant["requirements"]
    missing = sorted(set(req["features"]) - set(gpu.get("features", [])))
    if missing:
        out.append(reason("missing_feature", f"{variant['id']} needs WebGPU feature {', '.join(missing)}"))
    limits = gpu.get("limits", {})
    for limit, need in (("maxStorageBufferBindingSize", req["max_storage_buffer_binding_size"]),
                        ("maxBufferSize", req["max_buffer_size"])):
        if limit in limits and limits[limit] < need:
            out.append(reason("limit_too_small", f"{limit} is {int(limits[limit])}, {variant['id']} needs {need}"))
    memory = probe.get("device_memory_gb")
    need_gb = req["estimated_gpu_memory_bytes"] * policy["browser"]["memory_headroom"] / 1e9
    if memory is not None and memory < need_gb:
        out.append(reason("low_memory", f"the device reports {memory} GB of memory, {variant['id']} wants {need_gb:.1f} GB"))
    return out


def cpu_blockers(probe: dict, variant: dict, policy: dict) -> list[dict]:
    """Why the variant's CPU build cannot run here. A probe that does not say what its wasm can do (an
    older page) is not sent to the CPU build."""
    cpu, wasm = variant.get("cpu"), probe.get("wasm")
    if not cpu:
        return [reason("no_cpu_build", f"{variant['id']} has no CPU build (only float32 presets have one)")]
    if not wasm or not wasm.get("simd"):
        return [reason("no_wasm_simd", "this browser has no WebAssembly SIMD, which the CPU engine needs")]
    out = []
    if cpu["memory_bytes"] > WASM32_HEAP_BYTES:
        out.append(reason("wasm_heap_too_small", f"{variant['id']} needs {cpu['memory_bytes'] / 1e9:.1f} GB on the "
                                                 "CPU, over WebAssembly's 4 GB"))
    memory = probe.get("device_memory_gb")
    need_gb = cpu["memory_bytes"] * policy["browser"]["memory_headroom"] / 1e9
    if memory is not None and memory < need_gb:
        out.append(reason("low_memory", f"the device reports {memory} GB of memory, {variant['id']} wants {need_gb:.1f} GB"))
    cores = probe.get("hardware_concurrency")
    if cores is not None and cores < policy["cpu"]["min_cores"]:
        out.append(reason("too_few_cores", f"the device has {cores} core(s): the CPU engine would take the one the "
                                           "page needs"))
    return out


def common_blockers(probe: dict, variant: dict) -> list[dict]:
    """What stops a variant on any backend: a past failure, storage, the context window."""
    out = []
    for failed in probe.get("unreliable_models", []):
        if failed["id"] == variant["id"] and failed["version"] == variant["version"]:
            out.append(reason("unreliable", f"{variant['id']} failed on this device ({failed['reason']})"))
    storage = probe.get("storage")
    if storage and not is_cached(probe, variant):
        free = storage["quota_bytes"] - storage["usage_bytes"]
        need = min(variant["download_bytes"], variant.get("cpu", {}).get("download_bytes", variant["download_bytes"]))
        if free < need:
            out.append(reason("no_storage", f"{free / 1e6:.0f} MB of storage quota left, the download is "
                                            f"{need / 1e6:.0f} MB"))
    tokens = probe.get("prompt_tokens", 0) + probe.get("max_tokens", 0)
    if tokens > variant["context_window_size"]:
        out.append(reason("context_too_long", f"{tokens} tokens exceed the context window of "
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
        tokens_per_s = policy["cpu"]["decode_gbps"] * 1e9 / variant["cpu"]["download_bytes"]
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
    return {"ttft_s": round(download_s + p["load_seconds"] + prefill_s, 3), "tokens_per_s": round(tokens_per_s, 2),
            "download_s": round(download_s, 3), "source": source, "backend": backend}


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
    if not variants:
        return Decision("cloud" if state.cloud_available else "none", None, None, None,
                        [reason("no_model", "the catalog has no such model")])
    preference = probe.get("preference", "auto")
    runnable, reasons = [], []  # runnable: (variant, the backends it can run on)
    for variant in variants:
        blockers = browser_blockers(probe, variant, policy)
        backends = [b for b in forced_backends(probe) if not blockers[b]]
        if backends:
            runnable.append((variant, backends))
        else:  # why, per allowed backend: the CPU build's reasons where a page reported what its wasm can do
            reasons.extend(r for b in forced_backends(probe) if b == "webgpu" or "wasm" in probe for r in blockers[b])
    # Among runnable variants: one already cached first, then the smallest download.
    runnable.sort(key=lambda vb: (not is_cached(probe, vb[0]), min(download_bytes(vb[0], b) for b in vb[1])))
    best = runnable[0][0] if runnable else None
    backend, browser = faster_backend(probe, best, runnable[0][1], policy, state.calibration) if best else (None, None)
    cloud = predict_cloud(probe, state, policy)
    usable = best and cached_version(probe, best)
    outdated = [v for v in held_versions(probe, best) if v != usable] if best else []
    decision = Decision("none", variants[0]["model"], best["id"] if best else None,
                        (usable or best["version"]) if best else None, backend=backend,
                        predictions={"browser": browser, "cloud": cloud}, cached=bool(usable),
                        update={"from": outdated[0], "to": best["version"]} if outdated and not usable else None)
    if not state.cloud_available:
        reasons.append(reason("cloud_unavailable", "the server has no cloud engine configured"))

    def go(target: str, code: str, message: str) -> Decision:
        decision.target = target
        decision.reasons = [reason(code, message)] + once_per_cause(reasons)
        decision.prefetch = target == "cloud" and best is not None and not decision.cached and prefetch_ok
        return decision

    network = probe.get("network") or {}
    battery = probe.get("battery") or {}
    slow_network = network.get("save_data") or network.get("effective_type") in policy["network"]["slow_types"]
    floor = policy["browser"]["min_tokens_per_s"]
    too_slow = browser is not None and browser["tokens_per_s"] < floor
    # A download is wasted on a device predicted too slow to use it, unless the user wants it here anyway.
    prefetch_ok = (preference in ("fastest", "local_only") or (preference == "auto" and not too_slow)) \
        and not slow_network and not battery.get("saver")
    busy = state.cloud_full or state.queue_wait_s > policy["cloud"]["busy_wait_s"]

    if preference == "cloud_only":
        return go("cloud" if cloud else "none", "preference_cloud", "the user asked for the cloud")
    if preference == "local_only":
        if best:
            return go("browser", "preference_local", "the user asked to keep everything on this device")
        return go("none", "local_impossible", "the user asked for local only, and this browser cannot run the model")
    if not best:
        return go("cloud" if cloud else "none", "browser_cannot_run",
                  "this browser cannot run the model" + ("" if cloud else ", and there is no cloud engine"))
    if not cloud:
        return go("browser", "only_browser", "the browser is the only engine available")
    if not decision.cached:
        # The download would delay this answer: answer from the cloud, fetch in the background if sensible.
        if too_slow and preference == "auto":
            return go("cloud", "browser_too_slow", f"this device would give about {browser['tokens_per_s']} tokens/s "
                      f"({browser['source']}), under the {floor} the browser needs: not downloading the model")
        background = "; downloading it in the background" if prefetch_ok else ""
        if decision.update:
            return go("cloud", "update_available", f"a new version of {best['id']} is out ({decision.update['from']} "
                      f"-> {decision.update['to']}){background}")
        return go("cloud", "not_downloaded", f"{best['id']} is not in this browser yet{background}")
    if battery.get("saver"):
        return go("cloud", "battery_saver", "the device is saving battery")
    if busy:
        wait = "is at its limit" if state.cloud_full else f"has a {state.queue_wait_s:.0f} s queue"
        return go("browser", "server_busy", f"the server {wait}, and {best['id']} is cached in this browser")
    if browser is None:
        return go("browser", "cached", f"{best['id']} is cached in this browser (no speed measurement)")
    if too_slow:
        return go("cloud", "browser_too_slow", f"this device would give about {browser['tokens_per_s']} tokens/s "
                  f"({browser['source']}), under the {floor} the browser needs")
    if preference == "fastest":
        tokens = probe.get("max_tokens") or state.default_max_tokens
        if total_seconds(cloud, tokens) < total_seconds(browser, tokens):
            return go("cloud", "cloud_faster", "the cloud is predicted to answer sooner")
        return go("browser", "browser_faster", "this browser is predicted to answer sooner")
    if decision.version != best["version"]:
        return go("browser", "compatible_cached", f"{best['id']} {decision.version} is cached in this browser and "
                  f"the catalog marks it compatible with {best['version']}: no download needed")
    return go("browser", "cached", f"{best['id']} is cached in this browser and fast enough")

"""The routing policy, rule by rule: one table row per situation, with the target and the first reason."""
import copy
import json
import re

import pytest

from router import routing
from router.config import defaults, load_policy
from router.reasons import Reason
from tests.support.node import run_js
from tests.support.repo import DECISION, REPO

POLICY = load_policy(defaults()["POLICY_FILE"])


def decide(*args) -> routing.Decision:
    """routing.decide, with every decision checked against the decision's schema."""
    decision = routing.decide(*args)
    DECISION.validate(decision.to_json())
    return decision
MB = 1_000_000


def variant(quant, features=(), download=90 * MB, binding=14 * MB, memory=300 * MB, version="v1"):
    return {"id": f"Model-{quant}", "model": "Model", "quantization": quant, "version": version,
            "download_bytes": download, "context_window_size": 4096,
            "requirements": {"features": list(features), "max_storage_buffer_binding_size": binding,
                             "max_buffer_size": binding, "estimated_gpu_memory_bytes": memory}}


VARIANTS = [variant("q4f32_1", download=93 * MB), variant("q4f16_1", features=["shader-f16"], download=80 * MB)]
GOOD_GPU = {"available": True, "features": ["shader-f16"],
            "limits": {"maxStorageBufferBindingSize": 1 << 30, "maxBufferSize": 1 << 30}}
BASE = {"schema_version": 1, "webgpu": GOOD_GPU, "device_memory_gb": 8,
        "storage": {"quota_bytes": 10_000 * MB, "usage_bytes": 0},
        "cached_models": [{"id": "Model-q4f16_1", "version": "v1"}],
        "benchmark": {"bandwidth_gbps": 50.0}, "preference": "auto", "prompt_tokens": 20}
CLOUD = routing.ServerState(cloud_available=True, cloud_tokens_per_s=8.0, cloud_ttft_s=1.0)
# The fleet found this adapter class 2x slower than its bandwidth suggests (the policy's band lets it move no
# further): 1 GB/s -> about 6 tokens/s predicted, 3 calibrated, below the floor.
CALIBRATED_SLOW = routing.ServerState(cloud_available=True, cloud_tokens_per_s=8.0, cloud_ttft_s=1.0, calibration=0.5)
SLOW_PROBE = {"bandwidth_gbps": 1.0}
MEASURED_SLOW = {"id": "Model-q4f16_1", "version": "v1", "kernels": "software", "prefill_tokens_per_s": 3.0,
                 "decode_tokens_per_s": 0.5}
MEASURED_FAST = {**MEASURED_SLOW, "prefill_tokens_per_s": 300.0, "decode_tokens_per_s": 25.0}
NO_CLOUD = routing.ServerState(cloud_available=False)


def probe(**changes):
    p = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            p.pop(key, None)
        else:
            p[key] = value
    return p


CASES = [
    # (name, probe, server, target, first reason code, variant)
    ("cached and fast: browser", probe(), CLOUD, "browser", "cached", "Model-q4f16_1"),
    ("no WebGPU: cloud", probe(webgpu={"available": False}), CLOUD, "cloud", "browser_cannot_run", None),
    ("no shader-f16: the f32 variant", probe(webgpu={**GOOD_GPU, "features": []},
                                               cached_models=[{"id": "Model-q4f32_1", "version": "v1"}]),
     CLOUD, "browser", "cached", "Model-q4f32_1"),
    ("binding limit too small: cloud", probe(webgpu={**GOOD_GPU, "limits": {"maxStorageBufferBindingSize": 1 * MB}}),
     CLOUD, "cloud", "browser_cannot_run", None),
    ("too little device memory: cloud", probe(device_memory_gb=0.25), CLOUD, "cloud", "browser_cannot_run", None),
    ("storage quota too small and not cached: cloud",
     probe(cached_models=[], storage={"quota_bytes": 50 * MB, "usage_bytes": 0}), CLOUD, "cloud", "browser_cannot_run", None),
    ("not downloaded yet: cloud while prefetching", probe(cached_models=[]), CLOUD, "cloud", "not_downloaded", "Model-q4f16_1"),
    ("older version cached: cloud while fetching the new one",
     probe(cached_models=[{"id": "Model-q4f16_1", "version": "v0"}]), CLOUD, "cloud", "update_available", "Model-q4f16_1"),
    ("failed its self-check here: the other variant", probe(
        unreliable_models=[{"id": "Model-q4f16_1", "version": "v1", "reason": "self-check failed"}],
        cached_models=[{"id": "Model-q4f32_1", "version": "v1"}]), CLOUD, "browser", "cached", "Model-q4f32_1"),
    ("failed here, no other variant: cloud", probe(webgpu={**GOOD_GPU, "features": []},
        unreliable_models=[{"id": "Model-q4f32_1", "version": "v1", "reason": "the GPU was lost"}]),
     CLOUD, "cloud", "browser_cannot_run", None),
    ("failed at an older version only: the new one is tried", probe(
        unreliable_models=[{"id": "Model-q4f16_1", "version": "v0", "reason": "self-check failed"}]),
     CLOUD, "browser", "cached", "Model-q4f16_1"),
    ("slow benchmark: cloud", probe(benchmark={"bandwidth_gbps": 0.1}), CLOUD, "cloud", "browser_too_slow", "Model-q4f16_1"),
    ("prompt longer than the context: cloud", probe(prompt_tokens=5000), CLOUD, "cloud", "browser_cannot_run", None),
    ("battery saver: cloud", probe(battery={"saver": True}), CLOUD, "cloud", "battery_saver", "Model-q4f16_1"),
    ("local only and runnable: browser even if not cached", probe(preference="local_only", cached_models=[]),
     CLOUD, "browser", "preference_local", "Model-q4f16_1"),
    ("local only and impossible: none", probe(preference="local_only", webgpu={"available": False}),
     CLOUD, "none", "local_impossible", None),
    ("cloud only: cloud", probe(preference="cloud_only"), CLOUD, "cloud", "preference_cloud", "Model-q4f16_1"),
    ("fastest, cloud slower: browser", probe(preference="fastest"), CLOUD, "browser", "browser_faster", "Model-q4f16_1"),
    ("fastest, browser slower: cloud", probe(preference="fastest", benchmark={"bandwidth_gbps": 1.0}),
     routing.ServerState(True, cloud_tokens_per_s=500.0, cloud_ttft_s=0.1), "cloud", "cloud_faster", "Model-q4f16_1"),
    ("no cloud, browser can: browser", probe(cached_models=[]), NO_CLOUD, "browser", "only_browser", "Model-q4f16_1"),
    ("no cloud, browser cannot: none", probe(webgpu={"available": False}), NO_CLOUD, "none", "browser_cannot_run", None),
    ("no speed measurement but cached: browser", probe(benchmark=None), CLOUD, "browser", "cached", "Model-q4f16_1"),
    # Measured speeds outrank the bandwidth prediction; the fleet's calibration scales the prediction.
    ("measured too slow, despite a fast probe: cloud", probe(measured=[MEASURED_SLOW]), CLOUD, "cloud",
     "browser_too_slow", "Model-q4f16_1"),
    ("calibrated too slow: cloud", probe(benchmark=SLOW_PROBE), CALIBRATED_SLOW, "cloud", "browser_too_slow", "Model-q4f16_1"),
    ("calibrated too slow, not downloaded: cloud, no download", probe(cached_models=[], benchmark=SLOW_PROBE),
     CALIBRATED_SLOW, "cloud",
     "browser_too_slow", "Model-q4f16_1"),
    ("too slow but the user wants it local: browser", probe(preference="local_only", measured=[MEASURED_SLOW]),
     CLOUD, "browser", "preference_local", "Model-q4f16_1"),
    # A busy server sends answers to browsers that hold the model, slow or not.
    # "Whichever is faster" compares measured with measured: the cloud as this page saw it, when it has.
    ("fastest, the page saw the cloud faster than the server's own guess: cloud",
     probe(preference="fastest", measured=[MEASURED_FAST], measured_cloud={"ttft_s": 0.4, "decode_tokens_per_s": 60.0}),
     routing.ServerState(True), "cloud", "cloud_faster", "Model-q4f16_1"),
    ("fastest, the page saw the cloud slower than itself: browser",
     probe(preference="fastest", measured=[MEASURED_FAST], measured_cloud={"ttft_s": 2.0, "decode_tokens_per_s": 10.0}),
     routing.ServerState(True, cloud_tokens_per_s=500.0, cloud_ttft_s=0.1), "browser", "browser_faster", "Model-q4f16_1"),
    ("fastest, a fresh server measured at its warm-up, faster than a measured browser: cloud",
     probe(preference="fastest", measured=[MEASURED_FAST]), routing.ServerState(True, cloud_tokens_per_s=40.0,
                                                                                 cloud_ttft_s=0.2),
     "cloud", "cloud_faster", "Model-q4f16_1"),
    ("server at its limit: the cached browser", probe(measured=[MEASURED_SLOW]),
     routing.ServerState(True, 8.0, 1.0, cloud_full=True), "browser", "server_busy", "Model-q4f16_1"),
    ("server with a long queue: the cached browser", probe(),
     routing.ServerState(True, 8.0, 1.0, queue_wait_s=60.0), "browser", "server_busy", "Model-q4f16_1"),
    ("server busy, model not downloaded: cloud still", probe(cached_models=[]),
     routing.ServerState(True, 8.0, 1.0, cloud_full=True), "cloud", "not_downloaded", "Model-q4f16_1"),
]


@pytest.mark.parametrize("name,report,server,target,code,chosen", CASES, ids=[c[0] for c in CASES])
def test_decision(name, report, server, target, code, chosen):
    decision = decide(report, VARIANTS, server, POLICY)
    assert (decision.target, decision.reasons[0]["code"], decision.variant) == (target, code, chosen)
    assert all(r["message"] for r in decision.reasons)


def test_refusals_are_all_listed_once_per_cause():
    report = probe(webgpu={**GOOD_GPU, "features": [], "limits": {"maxStorageBufferBindingSize": 1 * MB}})
    reasons = decide(report, VARIANTS, CLOUD, POLICY).reasons
    assert [r["code"] for r in reasons] == ["browser_cannot_run", "limit_too_small", "missing_feature"]
    limits = reasons[1]
    assert limits["message"] == routing.CAUSES["limit_too_small"]
    assert [d.split(",")[1].split()[0] for d in limits["details"]] == ["Model-q4f32_1", "Model-q4f16_1"]
    # Every variant gives the same words: said once, with no details.
    reasons = decide(probe(webgpu={"available": False}), VARIANTS, CLOUD, POLICY).reasons
    assert [(r["code"], r["message"], "details" in r) for r in reasons[1:]] == \
        [("no_webgpu", "this browser has no usable WebGPU", False)]


def test_prefetch_only_when_sensible():
    assert decide(probe(cached_models=[]), VARIANTS, CLOUD, POLICY).prefetch
    # Predicted too slow: no download, unless the user wants this device to answer.
    assert not decide(probe(cached_models=[], benchmark=SLOW_PROBE), VARIANTS, CALIBRATED_SLOW, POLICY).prefetch
    for preference in ("local_only", "fastest"):
        decision = decide(probe(cached_models=[], preference=preference, benchmark=SLOW_PROBE), VARIANTS,
                          CALIBRATED_SLOW, POLICY)
        assert decision.prefetch or decision.target == "browser", preference
    for situation in ({"network": {"save_data": True}}, {"network": {"effective_type": "3g"}},
                      {"battery": {"saver": True}}, {"preference": "cloud_only"}):
        assert not decide(probe(cached_models=[], **situation), VARIANTS, CLOUD, POLICY).prefetch, situation


def test_predictions_follow_the_measurements():
    decision = decide(probe(cached_models=[]), VARIANTS, CLOUD, POLICY)
    browser, cloud = decision.predictions["browser"], decision.predictions["cloud"]
    # 50 GB/s at 50% efficiency over an 80 MB model: about 312 tokens/s; the download adds 64 s at 10 Mbit/s.
    assert browser["tokens_per_s"] == pytest.approx(50e9 * 0.5 / (80 * MB), rel=1e-3)
    assert browser["download_s"] == pytest.approx(80 * MB * 8 / 10e6, rel=1e-3)
    assert browser["source"] == "predicted"
    assert cloud == {"ttft_s": 1.1, "tokens_per_s": 8.0, "queue_wait_s": 0.0, "source": "measured_by_server"}
    assert decide(probe(), VARIANTS, NO_CLOUD, POLICY).predictions["cloud"] is None


def test_a_constrained_answer_counts_its_grammar_compile_in_the_browser():
    """The probe's `structured` (a response_format): the browser compiles the grammar in wasm first, which the
    policy's grammar_compile_s adds to its time to first token; the server's native compile is not counted."""
    plain = decide(probe(), VARIANTS, CLOUD, POLICY).predictions
    structured = decide(probe(structured=True), VARIANTS, CLOUD, POLICY).predictions
    assert structured["browser"]["ttft_s"] == pytest.approx(plain["browser"]["ttft_s"] + POLICY["browser"]["grammar_compile_s"])
    assert structured["cloud"] == plain["cloud"]


def test_no_model_in_catalog():
    decision = decide(probe(), [], CLOUD, POLICY)
    assert decision.target == "cloud" and decision.reasons[0]["code"] == "no_model"


def test_a_compatible_older_version_is_kept():
    variants = [{**VARIANTS[1], "version": "v2", "compatible_versions": ["v1"]}]
    decision = decide(probe(), variants, CLOUD, POLICY)
    assert (decision.target, decision.reasons[0]["code"], decision.version) == ("browser", "compatible_cached", "v1")
    assert decision.cached and decision.update is None


def test_an_incompatible_older_version_is_replaced():
    variants = [{**VARIANTS[1], "version": "v2"}]
    decision = decide(probe(), variants, CLOUD, POLICY)
    assert (decision.target, decision.version, decision.prefetch) == ("cloud", "v2", True)
    assert decision.update == {"from": "v1", "to": "v2"}
    assert "v1 -> v2" in decision.reasons[0]["message"]
    # Asked to stay local, the page loads the new version directly.
    local = decide(probe(preference="local_only"), variants, CLOUD, POLICY)
    assert (local.target, local.version, local.update) == ("browser", "v2", {"from": "v1", "to": "v2"})


def test_a_variant_that_failed_here_says_so():
    report = probe(unreliable_models=[{"id": "Model-q4f16_1", "version": "v1", "reason": "the GPU was lost"}])
    reasons = decide(report, VARIANTS[1:], CLOUD, POLICY).reasons
    assert {"code": "unreliable", "message": "Model-q4f16_1 failed on this device (the GPU was lost)"} in reasons


def test_measured_speeds_replace_the_prediction_and_the_queue_adds_to_the_cloud():
    fast = {**MEASURED_SLOW, "prefill_tokens_per_s": 200.0, "decode_tokens_per_s": 40.0}
    decision = decide(probe(measured=[fast], prompt_tokens=400), VARIANTS,
                              routing.ServerState(True, 8.0, 1.0, queue_wait_s=12.0), POLICY)
    browser, cloud = decision.predictions["browser"], decision.predictions["cloud"]
    assert (browser["tokens_per_s"], browser["source"]) == (40.0, "measured")
    assert browser["ttft_s"] == pytest.approx(POLICY["browser"]["load_seconds"] + 400 / 200.0)
    assert cloud["ttft_s"] == pytest.approx(1.0 + 12.0 + 0.1) and cloud["queue_wait_s"] == 12.0
    # The cloud as this page saw it (its network included) replaces the server's own measurement and the
    # round trip; the queue still adds to it. With neither, the policy's assumption says so.
    seen = decide(probe(measured_cloud={"ttft_s": 0.9, "decode_tokens_per_s": 31.0}), VARIANTS,
                  routing.ServerState(True, 8.0, 1.0, queue_wait_s=2.0), POLICY).predictions["cloud"]
    assert seen == {"ttft_s": 2.9, "tokens_per_s": 31.0, "queue_wait_s": 2.0, "source": "measured_by_browser"}
    assumed = decide(probe(), VARIANTS, routing.ServerState(True), POLICY).predictions["cloud"]
    assert (assumed["tokens_per_s"], assumed["source"]) == (POLICY["cloud"]["default_tokens_per_s"], "assumed")
    # A measurement of another version does not count for this one.
    stale = decide(probe(measured=[{**fast, "version": "v0"}]), VARIANTS, CLOUD, POLICY)
    assert stale.predictions["browser"]["source"] == "predicted"


def test_calibration_ratio_is_clipped():
    c = POLICY["calibration"]
    absurd = probe(measured=[{**MEASURED_SLOW, "decode_tokens_per_s": 999_999.0}])
    assert routing.calibration_ratio(absurd, VARIANTS[1], POLICY) == c["max_ratio"]
    tiny = probe(measured=[{**MEASURED_SLOW, "decode_tokens_per_s": 1e-6}])
    assert routing.calibration_ratio(tiny, VARIANTS[1], POLICY) == c["min_ratio"]
    assert routing.calibration_ratio(probe(), VARIANTS[1], POLICY) is None  # nothing measured


def test_adapter_classes_are_short_plain_keys():
    gpu = {**GOOD_GPU, "adapter": {"vendor": "Google", "architecture": "swiftshader", "description": "x",
                                   "is_fallback_adapter": True}}
    assert routing.adapter_class(probe(webgpu=gpu)) == "google/swiftshader/fallback"
    odd = {**GOOD_GPU, "adapter": {"vendor": "<b>" + "v" * 300, "architecture": ""}}
    assert routing.adapter_class(probe(webgpu=odd)) == "b-" + "v" * 38 + "/unknown"
    assert routing.adapter_class(probe(webgpu={"available": False})) is None


# --- the CPU build (wasm SIMD) ---------------------------------------------------------------------------
CPU_BUILD = {"file": "wasm_cpu", "simd": True, "threads": {"file": "wasm_cpu_threads", "memory_pages": [2560, 65536]},
             "download_bytes": 97 * MB, "memory_bytes": 600 * MB}
WITH_CPU = [{**VARIANTS[0], "cpu": CPU_BUILD}, VARIANTS[1]]  # as the build writes them: q4f32_1 has one
SIMD = {"simd": True, "threads": False}
NO_GPU = {"available": False}
CPU_CACHED = [{"id": "Model-q4f32_1", "version": "v1"}]
SOFTWARE_GPU = {**GOOD_GPU, "features": [], "adapter": {"vendor": "google", "architecture": "swiftshader",
                                                        "description": "", "is_fallback_adapter": True}}
MEASURED_CPU = {"id": "Model-q4f32_1", "version": "v1", "kernels": "cpu", "prefill_tokens_per_s": 60.0,
                "decode_tokens_per_s": 12.0}

CPU_CASES = [
    # (name, probe, server, target, first reason code, variant, backend)
    ("no WebGPU, wasm SIMD, cached: the CPU build", probe(webgpu=NO_GPU, wasm=SIMD, cached_models=CPU_CACHED),
     CLOUD, "browser", "cached", "Model-q4f32_1", "cpu"),
    ("no WebGPU, local only, not downloaded: the CPU build", probe(webgpu=NO_GPU, wasm=SIMD, cached_models=[],
                                                                  preference="local_only"),
     CLOUD, "browser", "preference_local", "Model-q4f32_1", "cpu"),
    ("no WebGPU, no cloud: the CPU build", probe(webgpu=NO_GPU, wasm=SIMD, cached_models=[]),
     NO_CLOUD, "browser", "only_browser", "Model-q4f32_1", "cpu"),
    ("no WebGPU and no wasm SIMD: the server", probe(webgpu=NO_GPU, wasm={"simd": False, "threads": False}),
     CLOUD, "cloud", "browser_cannot_run", None, None),
    ("one core: the server", probe(webgpu=NO_GPU, wasm=SIMD, hardware_concurrency=1, cached_models=CPU_CACHED),
     CLOUD, "cloud", "browser_cannot_run", None, None),
    ("too little memory for the CPU build: the server", probe(webgpu=NO_GPU, wasm=SIMD, device_memory_gb=1,
                                                               cached_models=CPU_CACHED),
     CLOUD, "cloud", "browser_cannot_run", None, None),
    ("server busy: a CPU browser takes the answer", probe(webgpu=NO_GPU, wasm=SIMD, cached_models=CPU_CACHED,
                                                           benchmark=None),
     routing.ServerState(cloud_available=True, queue_wait_s=60.0), "browser", "server_busy", "Model-q4f32_1", "cpu"),
    ("a software adapter: the CPU build is faster", probe(webgpu=SOFTWARE_GPU, wasm=SIMD, cached_models=CPU_CACHED),
     CLOUD, "browser", "cached", "Model-q4f32_1", "cpu"),
    ("a software adapter measured faster than the CPU build: WebGPU",
     probe(webgpu=SOFTWARE_GPU, wasm=SIMD, cached_models=CPU_CACHED, measured=[
         MEASURED_CPU, {**MEASURED_CPU, "kernels": "software", "decode_tokens_per_s": 20.0}]),
     CLOUD, "browser", "cached", "Model-q4f32_1", "webgpu"),
    ("a real GPU predicted faster: WebGPU", probe(wasm=SIMD, cached_models=CPU_CACHED, webgpu={**GOOD_GPU, "features": []}),
     CLOUD, "browser", "cached", "Model-q4f32_1", "webgpu"),
    ("a software adapter, the page URL forcing WebGPU kernels: WebGPU",
     probe(webgpu=SOFTWARE_GPU, wasm=SIMD, cached_models=CPU_CACHED, kernels="software"),
     CLOUD, "browser", "cached", "Model-q4f32_1", "webgpu"),
    ("a real GPU, the page URL forcing the CPU build: the CPU build",
     probe(wasm=SIMD, cached_models=CPU_CACHED, webgpu={**GOOD_GPU, "features": []}, kernels="cpu"),
     CLOUD, "browser", "cached", "Model-q4f32_1", "cpu"),
    ("no WebGPU, the page URL forcing WebGPU kernels: the server, for want of WebGPU",
     probe(webgpu=NO_GPU, wasm=SIMD, cached_models=CPU_CACHED, kernels="gpu"),
     CLOUD, "cloud", "browser_cannot_run", None, None),
]


@pytest.mark.parametrize("name,report,server,target,code,chosen,backend", CPU_CASES, ids=[c[0] for c in CPU_CASES])
def test_cpu_decision(name, report, server, target, code, chosen, backend):
    d = decide(report, WITH_CPU, server, POLICY)
    assert (d.target, d.reasons[0]["code"], d.variant, d.backend) == (target, code, chosen, backend), d.reasons


def test_cpu_refusals_are_named():
    d = decide(probe(webgpu=NO_GPU, wasm={"simd": False}), WITH_CPU, CLOUD, POLICY)
    codes = [r["code"] for r in d.reasons]
    assert {"no_webgpu", "no_wasm_simd", "no_cpu_build"} <= set(codes), codes
    huge = [{**WITH_CPU[0], "cpu": {**CPU_BUILD, "memory_bytes": 5 * 1024 * MB}}]
    d = decide(probe(webgpu=NO_GPU, wasm=SIMD, device_memory_gb=64), huge, CLOUD, POLICY)
    assert "wasm_heap_too_small" in [r["code"] for r in d.reasons]


def test_cpu_prediction_uses_its_own_measurement_and_download():
    report = probe(webgpu=NO_GPU, wasm=SIMD, cached_models=[], measured=[MEASURED_CPU,
             {**MEASURED_CPU, "kernels": "software", "decode_tokens_per_s": 99.0}])
    browser = decide(report, WITH_CPU, CLOUD, POLICY).predictions["browser"]
    assert (browser["tokens_per_s"], browser["source"], browser["backend"]) == (12.0, "measured", "cpu")
    predicted = decide(probe(webgpu=NO_GPU, wasm=SIMD), WITH_CPU, CLOUD, POLICY).predictions["browser"]
    assert predicted["tokens_per_s"] == round(POLICY["cpu"]["decode_gbps"] * 1e9 / CPU_BUILD["download_bytes"], 2)


@pytest.mark.parametrize("cores,isolated,threaded_build,threads", [
    (4, True, True, 4), (4, False, True, 1), (4, True, False, 1), (64, True, True, 8), (2, True, True, 2)])
def test_cpu_prediction_counts_the_threads_the_page_will_run(cores, isolated, threaded_build, threads):
    """Threads where the page has shared memory (wasm.threads) and the variant a threaded build: every core up
    to the policy's most, as the browser engine picks them (cpu_threads.js threadsHere)."""
    build = CPU_BUILD if threaded_build else {k: v for k, v in CPU_BUILD.items() if k != "threads"}
    variants = [{**VARIANTS[0], "cpu": build}]
    report = probe(webgpu=NO_GPU, wasm={"simd": True, "threads": isolated}, hardware_concurrency=cores)
    assert routing.cpu_threads(report, variants[0], POLICY) == threads
    one_thread = POLICY["cpu"]["decode_gbps"] * 1e9 / CPU_BUILD["download_bytes"]
    speedup = 1 + (threads - 1) * POLICY["cpu"]["thread_gain"]
    predicted = decide(report, variants, CLOUD, POLICY).predictions["browser"]
    assert predicted["tokens_per_s"] == round(one_thread * speedup, 2)


def test_the_browser_engine_picks_the_threads_the_router_predicts_with():
    """cpu_threads.js threadsHere (under node) against router/routing.py cpu_threads, at the engine's default
    (no cpuThreads option) with the policy's most."""
    cases = [{"cores": c, "isolated": i, "threaded": t} for c in (1, 2, 3, 8, 16) for i in (True, False) for t in (True, False)]
    for case in cases:
        build = CPU_BUILD if case["threaded"] else {k: v for k, v in CPU_BUILD.items() if k != "threads"}
        case["model"] = {**VARIANTS[0], "cpu": build}
    picked = run_js("""
      return data.cases.map(({ cores, isolated, model }) => {
        Object.defineProperty(globalThis, "navigator", { value: { hardwareConcurrency: cores }, configurable: true });
        globalThis.crossOriginIsolated = isolated;
        return modules.cpu_threads.threadsHere(model, undefined, data.most).threads;
      });""", {"cases": cases, "most": POLICY["cpu"]["max_threads"]})
    expected = [routing.cpu_threads(probe(wasm={"simd": True, "threads": c["isolated"]}, hardware_concurrency=c["cores"]),
                                    c["model"], POLICY) for c in cases]
    assert picked == expected


# --- the reason codes ------------------------------------------------------------------------------------
def test_the_reason_codes_agree_everywhere():
    """The router's codes (router/reasons.py) are the decision schema's, and the client package's ReasonCode
    (index.d.ts) is those and the codes its JS gives its own decisions (while the server cannot be asked),
    none of which is the router's."""
    schema = json.loads((REPO / "router" / "schemas" / "route-decision.v1.json").read_text())
    assert sorted(schema["properties"]["reasons"]["items"]["properties"]["code"]["enum"]) == sorted(Reason)
    declarations = (REPO / "webapp" / "client" / "index.d.ts").read_text()
    typed = re.findall(r'"(\w+)"', re.search(r"export type ReasonCode =([^;]*);", declarations).group(1))
    scripts = [*(REPO / "webapp" / "client").rglob("*.js"), *(REPO / "webapp" / "static" / "js").glob("*.js")]
    own = {code for js in scripts for code in re.findall(r'\bcode: "(\w+)"', js.read_text())}
    assert own and not own & set(Reason), own
    assert sorted(typed) == sorted(set(Reason) | own)


def test_every_reason_given_is_a_member():
    decisions = [decide(c[1], VARIANTS, c[2], POLICY) for c in CASES] + \
        [decide(c[1], WITH_CPU, c[2], POLICY) for c in CPU_CASES] + [decide(probe(), [], CLOUD, POLICY)]
    assert all(type(r["code"]) is Reason for d in decisions for r in d.reasons)

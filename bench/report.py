"""Medians with min and max over the repeats; the targets as ratios measured in the same run; JSON and
markdown tables."""
from __future__ import annotations

import math
import platform
import statistics
from pathlib import Path

from router.threads import available_cores

SKIPPED = ("engine", "workload", "repeat", "text")
HOST_COSTS = {"js_sample_ms": "the browser's sampler (node)", "python_sample_ms": "the server's sampler",
              "python_detokenize_ms": "the server's detokenizer"}


# The SIMD extensions the kernels' speed depends on, as /proc/cpuinfo names them.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "neon", "asimd", "sve")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """What the numbers were measured on: the CPU's model, the cores this process may use, its SIMD flags."""
    fields = {}
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first core's
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(),
            "cores": available_cores()[0], "simd": [f for f in SIMD_FLAGS if f in flags],
            "python": platform.python_version()}


def describe(machine: dict) -> str:
    return f"{machine['cpu']}, {machine['cores']} cores, {' '.join(machine.get('simd', [])) or 'no SIMD flags read'}"


def summarize(runs: list[dict]) -> dict:
    """{engine: {workload: {metric: {median, min, max}}}} over every numeric metric the runs have."""
    summary: dict = {}
    for run in runs:
        for metric, value in run.items():
            if metric not in SKIPPED and isinstance(value, (int, float)) and value is not None:
                summary.setdefault(run["engine"], {}).setdefault(run["workload"], {}).setdefault(metric, []).append(value)
    return {engine: {workload: {metric: stats(values) for metric, values in metrics.items()}
                     for workload, metrics in workloads.items()} for engine, workloads in summary.items()}


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def median(summary: dict, engine: str, workload: str, metric: str) -> float:
    return summary.get(engine, {}).get(workload, {}).get(metric, {}).get("median", math.nan)


def targets(summary: dict, rooflines: dict, host: dict) -> list[dict]:
    """The targets, each a ratio of two numbers from this run (nan where one was not measured)."""
    m = lambda engine, workload, metric: median(summary, engine, workload, metric)
    browsers = [name for name in summary if name.startswith("browser")]
    rows = []
    for browser in [name for name in browsers if name in rooflines]:
        roof = rooflines[browser]["tokens_per_s"]
        rows.append({"target": f"{browser}: decode ≥ 35% of the adapter's roofline",
                     "ratio": m(browser, "short", "decode_tokens_per_s") / roof, "goal": 0.35})
    for browser in [name for name in browsers if "(compat)" in name]:
        rows += [
            {"target": f"{browser}: prefill ≥ 0.5× transformers.js wasm's",
             "ratio": m(browser, "long", "prefill_tokens_per_s") / m("transformers.js wasm", "long", "prefill_tokens_per_s"),
             "goal": 0.5},
            {"target": f"{browser}: decode ≥ 1.5× wllama's",
             "ratio": m(browser, "short", "decode_tokens_per_s") / m("wllama", "short", "decode_tokens_per_s"), "goal": 1.5},
            {"target": f"{browser}: warm load (reload, cached) to first token ≤ 3 s (ratio: 3 s / measured)",
             "ratio": 3.0 / m(browser, "load", "warm_load_s"), "goal": 1.0},
        ]
    # The CPU build against the CPU peers at the same thread count (wllama), and transformers.js wasm 4-bit.
    cpu, cpu_1t = "browser · cpu", "browser · cpu 1t"
    rows += [
        {"target": f"{cpu_1t}: decode ≥ 1.5× wllama's on one thread",
         "ratio": m(cpu_1t, "short", "decode_tokens_per_s") / m("wllama 1t", "short", "decode_tokens_per_s"), "goal": 1.5},
        {"target": f"{cpu}: decode ≥ 1.5× wllama's on every core",
         "ratio": m(cpu, "short", "decode_tokens_per_s") / m("wllama", "short", "decode_tokens_per_s"), "goal": 1.5},
        {"target": f"{cpu}: decode on every core ≥ 1.3× its own on one thread",
         "ratio": m(cpu, "short", "decode_tokens_per_s") / m(cpu_1t, "short", "decode_tokens_per_s"), "goal": 1.3},
        {"target": f"{cpu}: decode ≥ transformers.js wasm's (4-bit)",
         "ratio": m(cpu, "short", "decode_tokens_per_s") / m("transformers.js wasm", "short", "decode_tokens_per_s"), "goal": 1.0},
        {"target": f"{cpu}: prefill ≥ 1.5× transformers.js wasm's (4-bit)",
         "ratio": m(cpu, "long", "prefill_tokens_per_s") / m("transformers.js wasm", "long", "prefill_tokens_per_s"), "goal": 1.5},
    ]
    for engine in [name for name in summary if "chat" in summary[name]]:
        rows += [
            {"target": f"{engine}: chat, TTFT at the last turn ≤ 1.5× the first's (ratio: 1.5 / measured)",
             "ratio": 1.5 / m(engine, "chat", "ttft_last_over_first"), "goal": 1.0},
            {"target": f"{engine}: chat, sampled decode ≥ 0.95× greedy",
             "ratio": m(engine, "chat", "sampled_over_greedy"), "goal": 0.95},
        ]
    rows += [{"target": f"host work per token ≤ 1 ms: {name} (ratio: 1 ms / measured)", "ratio": 1.0 / host[key],
              "goal": 1.0} for key, name in HOST_COSTS.items() if key in host]
    return rows + [
        {"target": "server decode ≥ 0.8× llama.cpp's, at the same thread count",
         "ratio": m("server", "short", "decode_tokens_per_s") / m("llama.cpp CPU", "short", "decode_tokens_per_s"), "goal": 0.8},
    ]


def markdown(results: dict) -> str:
    summary, failures = results["summary"], results["failures"]

    def cell(engine, workload, metric, digits=3) -> str:
        s = summary.get(engine, {}).get(workload, {}).get(metric)
        return "—" if not s else f"{s['median']:.{digits}g} ({s['min']:.{digits}g}–{s['max']:.{digits}g})"

    lines = [f"`{results.get('command', 'python -m bench')}`, {results['date']}; {results['repeats']} interleaved "
             f"runs each; median (min–max). Measured on: {describe(results['machine'])}.", "",
             "| engine | device | cold load → 1st token s | warm load → 1st token s | TTFT short s | TTFT long s "
             "| prefill tok/s (long) | decode tok/s (short) | decode of roofline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for engine, device in results["adapters"].items():
        if engine in failures:
            lines.append(f"| {engine} | {device} | failed: {failures[engine].replace('|', '/')} |||||||")
            continue
        roof = results["rooflines"].get(engine)
        of_roof = f"{100 * median(summary, engine, 'short', 'decode_tokens_per_s') / roof['tokens_per_s']:.0f}%" if roof else "—"
        lines.append(f"| {engine} | {device} | {cell(engine, 'load', 'cold_load_s')} | {cell(engine, 'load', 'warm_load_s')} "
                     f"| {cell(engine, 'short', 'ttft_s')} | {cell(engine, 'long', 'ttft_s')} "
                     f"| {cell(engine, 'long', 'prefill_tokens_per_s')} | {cell(engine, 'short', 'decode_tokens_per_s')} | {of_roof} |")
    structured = [engine for engine in summary if "json_schema" in summary[engine]]
    if structured:
        lines += ["", "Structured output (Seam's engines): one prompt as free text and constrained to a JSON schema.", "",
                  "| engine | decode tok/s, text | decode tok/s, schema | schema / text | grammar ms/token |",
                  "|---|---|---|---|---|"]
    for engine in structured:
        ratio = median(summary, engine, "json_schema", "decode_tokens_per_s") / median(summary, engine, "json_text", "decode_tokens_per_s")
        lines.append(f"| {engine} | {cell(engine, 'json_text', 'decode_tokens_per_s')} | "
                     f"{cell(engine, 'json_schema', 'decode_tokens_per_s')} | {ratio:.2f}× | "
                     f"{cell(engine, 'json_schema', 'grammar_ms_per_token')} |")
    calling = [engine for engine in summary if "tools" in summary[engine]]
    if calling:
        lines += ["", "Tool calling (Seam's engines): a question answered with a call to one tool (tool_choice required, "
                  "greedy), the call held to the tool's schema.", "",
                  "| engine | TTFT s | decode tok/s | grammar ms/token | tokens |", "|---|---|---|---|---|"]
    for engine in calling:
        lines.append(f"| {engine} | {cell(engine, 'tools', 'ttft_s')} | {cell(engine, 'tools', 'decode_tokens_per_s')} "
                     f"| {cell(engine, 'tools', 'grammar_ms_per_token')} | {cell(engine, 'tools', 'completion_tokens', 4)} |")
    chats = [engine for engine in summary if "chat" in summary[engine]]
    if chats:
        lines += ["", "A conversation (Seam's engines): 8 turns at the page's sampling (temperature 0.7, top-p 0.95), "
                  "~200-token answers, each sent with its whole history; the sampled and greedy columns answer the "
                  "first turn again, back to back.", "",
                  "| engine | TTFT turn 1 s | TTFT turn 8 s | turn 8 / turn 1 | context at turn 8 | decode tok/s, "
                  "sampled | decode tok/s, greedy | sampled / greedy |", "|---|---|---|---|---|---|---|---|"]
    for engine in chats:
        lines.append(f"| {engine} | {cell(engine, 'chat', 'ttft_first_turn_s')} | {cell(engine, 'chat', 'ttft_last_turn_s')} "
                     f"| {cell(engine, 'chat', 'ttft_last_over_first')} | {cell(engine, 'chat', 'prompt_tokens', 4)} "
                     f"| {cell(engine, 'chat', 'sampled_decode_tokens_per_s')} "
                     f"| {cell(engine, 'chat', 'greedy_decode_tokens_per_s')} | {cell(engine, 'chat', 'sampled_over_greedy')} |")
    if results.get("host"):
        lines += ["", f"Host work per token at the page's sampling, over the real model's {results['host']['vocabulary']}"
                  "-token logits (no forward pass): " + ", ".join(f"{name} {results['host'][key]:.3f} ms"
                                                                 for key, name in HOST_COSTS.items()) + "."]
    if results.get("tabs"):
        tabs = results["tabs"]
        lines += ["", f"Memory of the browser (Chromium, the PSS of all its processes) with one and two tabs that answered "
                  f"from {tabs['variant']} ({tabs['kernels']} kernels):", "",
                  "| each tab's engine | one tab MB | two tabs MB | the second tab adds MB |", "|---|---|---|---|"]
        lines += [f"| {label} | {tabs[mode]['one_tab_mb']:.0f} | {tabs[mode]['two_tabs_mb']:.0f} | "
                  f"{tabs[mode]['second_tab_adds_mb']:.0f} |"
                  for mode, label in (("own", "its own (a second copy of the model)"), ("shared", "shared by the tabs"))]
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in results["targets"]:
        measured = "not measured" if math.isnan(t["ratio"]) else f"{t['ratio']:.2f}"
        met = "—" if math.isnan(t["ratio"]) else ("yes" if t["ratio"] >= t["goal"] else "no")
        lines.append(f"| {t['target']} | {measured} | {t['goal']} | {met} |")
    for engine, limit in results["rooflines"].items():
        lines.append(f"\nRoofline of {engine}: {limit['bandwidth_gbps']:.2f} GB/s (a read kernel over 64 MiB in the "
                     f"same browser) / {limit['bytes_per_token'] / 1e6:.1f} MB read per decoded token = "
                     f"{limit['tokens_per_s']:.2f} tokens/s.")
    return "\n".join(lines) + "\n"

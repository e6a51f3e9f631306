"""python -m bench [--repeats N] [--out DIR]: runs the measurements interleaved, writes JSON and a table."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import host, report, tabs
from bench.chart import write_chart
from bench.engines import (BrowserEngine, LlamaCppEngine, ServerEngine, TransformersJsEngine, WllamaEngine,
                           catalog_entry, stop_playwright)
from bench.peers import setup
from bench.workloads import workloads
from modelbuild.source import default_model_path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every measurement (default 3)")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="what `make build-model` wrote")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results go")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, from: {', '.join(ENGINES)} (default: all)")
    parser.add_argument("--decode-tokens", type=int, default=128, help="tokens generated for decode speed (128)")
    parser.add_argument("--long-prompt-tokens", type=int, default=512, help="the long prompt's length (512)")
    parser.add_argument("--chat-tokens", type=int, default=200, help="tokens per answer in the chat (200)")
    parser.add_argument("--workloads", default="load,short,long,json,tools,chat,host,tabs",
                        help="comma-separated, from: load, short, long, json (structured output), tools (a tool call), chat (a whole "
                             "conversation at the page's sampling), host (sampling and detokenizing per token, "
                             "without a forward pass), tabs (the memory a second tab adds, with and without the "
                             "shared engine) (default: all)")
    args = parser.parse_args()
    engines = make_engines(args.engines.split(","), args.models)
    tokenizer = args.models / catalog_entry(args.models)["path"] / "tokenizer.json"
    chosen = args.workloads.split(",")
    plan = [w for w in workloads(tokenizer, args.decode_tokens, args.long_prompt_tokens,
                              chat_tokens=args.chat_tokens)
            if w.name.split("_")[0] in chosen]
    failures: dict[str, str] = {}
    runs = []
    host_costs = host.measure(args.models) if "host" in chosen else {}
    if host_costs:
        say(f"host work per token: {host_costs}")
    tab_memory = tabs.measure(args.models) if "tabs" in chosen else {}
    if tab_memory:
        say(f"memory with one and two tabs: {tab_memory}")
    try:
        for engine in engines:
            say(f"{engine.name}: starting")
            try:
                engine.start()
            except Exception as error:  # a peer that cannot start is a row in the table, not a stopped bench
                failures[engine.name] = str(error)[:300]
                say(f"{engine.name}: FAILED to start: {error}")
        live = [e for e in engines if e.name not in failures]
        # Interleaved: each repeat runs every engine on every workload, so drift hits them all alike.
        for repeat in range(args.repeats):
            for workload in plan:
                for engine in live:
                    if engine.name in failures or (workload.seam_only and not engine.seam):
                        continue
                    say(f"repeat {repeat + 1}/{args.repeats}: {engine.name}, {workload.name} ...")
                    try:
                        runs.append({"engine": engine.name, "workload": workload.name, "repeat": repeat,
                                     **engine.run(workload)})
                    except Exception as error:
                        failures[engine.name] = f"failed while running {workload.name}: {str(error)[:300]}"
                        say(f"  FAILED: {error}")
                        continue
                    say(f"  {format_run(runs[-1])}")
    finally:
        for engine in engines:
            engine.close()
        stop_playwright()
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats,
               "command": " ".join(["python -m bench", *sys.argv[1:]]),
               "machine": report.machine(), "adapters": {e.name: e.device for e in engines}, "runs": runs,
               "failures": failures, "rooflines": rooflines(engines, runs, failures), "summary": report.summarize(runs),
               "host": host_costs, "tabs": tab_memory}
    results["targets"] = report.targets(results["summary"], results["rooflines"], host_costs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2))
    table = report.markdown(results)
    (args.out / "bench.md").write_text(table)
    write_chart(results, args.out / "bench.png")
    print(table)
    say(f"wrote {args.out / 'bench.json'}, {args.out / 'bench.md'} and {args.out / 'bench.png'}")


def rooflines(engines, runs, failures) -> dict:
    """For engines that measured their memory bandwidth, the decode limit at their runs' mean context."""
    limits = {}
    for engine in engines:
        mine = [r for r in runs if r["engine"] == engine.name and r["workload"] == "short"]
        if hasattr(engine, "roofline") and mine and engine.name not in failures:
            context = sum(r["prompt_tokens"] + r["completion_tokens"] / 2 for r in mine) / len(mine)
            if (limit := engine.roofline(context)) is not None:
                limits[engine.name] = limit
    return limits


# The browser engine on each adapter (core: SwiftShader here; compat: llvmpipe) with each kernel set, and
# on the CPU (its wasm SIMD build): on every core (the page is cross-origin isolated), and on one thread.
BROWSERS = {**{f"browser{'-compat' if level == 'compatibility' else ''}-{kernels}": (level, kernels)
               for level in ("core", "compatibility") for kernels in ("software", "gpu")},
            "browser-cpu": ("core", "cpu"), "browser-cpu-1t": ("core", "cpu", 1)}
# wllama on one thread per core, and on one thread (as browser-cpu and browser-cpu-1t).
ENGINES = ("server", *BROWSERS, "transformers.js-webgpu", "transformers.js-wasm", "wllama", "wllama-1t", "llama.cpp")


def make_engines(names: list[str], models: Path) -> list:
    unknown = set(names) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")
    engines = [ServerEngine(models)] if "server" in names else []
    engines += [BrowserEngine(models, *BROWSERS[name]) for name in BROWSERS if name in names]
    if any(n.startswith("transformers.js") for n in names):
        tjs, onnx = setup.transformers_js(), setup.onnx_model(default_model_path())
        engines += [TransformersJsEngine(device, tjs, onnx) for device in ("webgpu", "wasm")
                    if f"transformers.js-{device}" in names]
    for name, threads in (("wllama", None), ("wllama-1t", 1)):
        if name in names:
            engines.append(WllamaEngine(setup.wllama(), default_model_path(), threads))
    if "llama.cpp" in names:
        engines.append(LlamaCppEngine(setup.llama_cpp(), default_model_path()))
    return engines


def format_run(run: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in run.items()
                     if k not in ("engine", "workload", "repeat", "text"))


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


if __name__ == "__main__":
    main()

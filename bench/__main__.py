"""python -m bench [--repeats N] [--out DIR]: runs the measurements interleaved, writes JSON and a table."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench import report
from bench.engines import BrowserEngine, ServerEngine
from bench.workloads import WORKLOADS

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every measurement (default 3)")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="what `make build-model` wrote")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results go")
    parser.add_argument("--engines", default="server,browser", help="comma-separated: server,browser")
    args = parser.parse_args()
    wanted = args.engines.split(",")
    engines = [e for e in (ServerEngine(args.models), BrowserEngine(args.models)) if e.name in wanted]
    runs = []
    try:
        for engine in engines:
            say(f"{engine.name}: starting")
            engine.start()
        # Interleaved: each repeat runs every engine on every workload, so drift hits them all alike.
        for repeat in range(args.repeats):
            for workload in WORKLOADS:
                for engine in engines:
                    say(f"repeat {repeat + 1}/{args.repeats}: {engine.name}, {workload.name} ...")
                    runs.append({"engine": engine.name, "workload": workload.name, "repeat": repeat,
                                 **engine.run(workload)})
                    say(f"  {format_run(runs[-1])}")
    finally:
        for engine in engines:
            engine.close()
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats,
               "machine": report.machine(), "adapters": {e.name: e.device for e in engines}, "runs": runs,
               "summary": report.summarize(runs)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2))
    table = report.markdown(results)
    (args.out / "bench.md").write_text(table)
    print(table)
    say(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")


def format_run(run: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in run.items()
                     if k not in ("engine", "workload", "repeat", "text"))


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


if __name__ == "__main__":
    main()

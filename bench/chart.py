"""The bench's PNG: decode and prefill speed per engine, medians with min-max whiskers, log scale (the
engines here span from under one token per second to hundreds)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt  # noqa: E402

BARS = (("short", "decode_tokens_per_s", "decode tok/s (short prompt)"),
        ("long", "prefill_tokens_per_s", "prefill tok/s (long prompt)"))


def write_chart(results: dict, path: Path) -> None:
    engines = [e for e in results["summary"] if any(w in results["summary"][e] for w, _, _ in BARS)]
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=120)
    width = 0.8 / len(BARS)
    for i, (workload, metric, label) in enumerate(BARS):
        stats = [results["summary"][e].get(workload, {}).get(metric) for e in engines]
        xs = [j + (i - (len(BARS) - 1) / 2) * width for j in range(len(engines))]
        medians = [s["median"] if s else 0 for s in stats]
        errors = [[s["median"] - s["min"] if s else 0 for s in stats], [s["max"] - s["median"] if s else 0 for s in stats]]
        axes.bar(xs, medians, width, yerr=errors, capsize=3, label=label)
    axes.set_xticks(range(len(engines)), engines, rotation=15)
    axes.set_yscale("log")
    axes.set_ylabel("tokens / s")
    axes.set_title(f"SmolLM2-135M-Instruct, 4-bit; {results['date']}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)

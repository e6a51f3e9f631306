"""Medians with min and max over the repeats, as JSON and as a markdown table."""
from __future__ import annotations

import os
import platform
import statistics

METRICS = ("ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s")


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for engine, workload in dict.fromkeys((r["engine"], r["workload"]) for r in runs):
        mine = [r for r in runs if (r["engine"], r["workload"]) == (engine, workload)]
        row = {"engine": engine, "workload": workload, "runs": len(mine),
               "completion_tokens": statistics.median(r["completion_tokens"] for r in mine)}
        for metric in (*METRICS, "grammar_ms_per_token"):
            values = [r[metric] for r in mine if metric in r]
            if values:
                row[metric] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        rows.append(row)
    for row in rows:  # the cost of constraining: decode speed with a schema over the same engine's plain text
        plain = next((r for r in rows if r["engine"] == row["engine"] and r["workload"] == "text"), None)
        if plain and row["workload"] != "text":
            row["decode_vs_text"] = row["decode_tokens_per_s"]["median"] / plain["decode_tokens_per_s"]["median"]
    return rows


def markdown(results: dict) -> str:
    def cell(stat: dict) -> str:
        return f"{stat['median']:.3g} ({stat['min']:.3g}–{stat['max']:.3g})"

    lines = [f"Default model, q4f32_1; {results['repeats']} interleaved runs; median (min–max). "
             f"{results['date']}; " + "; ".join(f"{k}: {v}" for k, v in results["adapters"].items()), "",
             "| engine | workload | tokens | TTFT s | prefill tok/s | decode tok/s | decode vs text | grammar ms/token |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["summary"]:
        ratio = f"{row['decode_vs_text']:.2f}×" if "decode_vs_text" in row else "—"
        grammar = cell(row["grammar_ms_per_token"]) if "grammar_ms_per_token" in row else "—"
        lines.append(f"| {row['engine']} | {row['workload']} | {row['completion_tokens']:.0f} | {cell(row['ttft_s'])} | "
                     f"{cell(row['prefill_tokens_per_s'])} | {cell(row['decode_tokens_per_s'])} | {ratio} | {grammar} |")
    return "\n".join(lines) + "\n"

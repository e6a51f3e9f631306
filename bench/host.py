"""Host work per token at the page's sampling settings, on the real model's 49k-token logits: choosing a
token in each engine's language (router/sampling.py under Python, sampling.js under node, the code the
worker runs) and the incremental detokenizer. The forward pass is not in it: this is what the host adds
to every decode step."""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.engines import catalog_entry
from bench.workloads import CHAT_TURNS, PAGE_SAMPLING
from router.engine import Engine
from router.sampling import Detokenizer, sample

SAMPLER_JS = Path(__file__).with_name("host_sampling.mjs")
DRAWS = 400  # tokens sampled per language


def measure(models: Path) -> dict:
    entry = catalog_entry(models)
    engine = Engine(models / entry["path"], entry, cache_conversations=0)
    logits = np.stack([first_logits(engine, question) for question in CHAT_TURNS])
    return {"python_sample_ms": python_sample_ms(logits), "js_sample_ms": js_sample_ms(logits),
            "python_detokenize_ms": detokenize_ms(engine), "vocabulary": logits.shape[1]}


def first_logits(engine: Engine, question: str) -> np.ndarray:
    """The logits of an answer's first token: a real distribution over the real vocabulary."""
    prompt = engine.prompt_ids([{"role": "user", "content": question}])
    seq, held = engine.caches.take(prompt, 1)
    try:
        return engine._prefill(seq, held, prompt).astype(np.float32)
    finally:
        engine.caches.drop(seq)


def python_sample_ms(logits: np.ndarray) -> float:
    started = time.perf_counter()
    for position in range(DRAWS):
        sample(logits[position % len(logits)], PAGE_SAMPLING["temperature"], PAGE_SAMPLING["top_p"], 7, position)
    return (time.perf_counter() - started) * 1000 / DRAWS


def js_sample_ms(logits: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "logits.f32"
        path.write_bytes(logits.tobytes())
        out = subprocess.run(["node", str(SAMPLER_JS), str(path), str(logits.shape[1]), str(DRAWS),
                              json.dumps(PAGE_SAMPLING)], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)["ms_per_token"]


def detokenize_ms(engine: Engine) -> float:
    ids = engine.tokenizer.encode(" ".join(CHAT_TURNS) * 4, add_special_tokens=False).ids
    detokenizer = Detokenizer(lambda window: engine.tokenizer.decode(window, skip_special_tokens=True))
    started = time.perf_counter()
    for token in ids:
        detokenizer.push(token)
    return (time.perf_counter() - started) * 1000 / len(ids)

"""`python -m modelbuild quality`: the perplexity each built preset reaches on a fixed English text.

The text is the Apache License 2.0 as shipped by Debian's base-files package (on every Debian system),
read with the model's own CPU library, one token at a time, through the same KV cache the server uses.
Comparing presets built from one source shows what each quantization costs; `q0f32` is the source's
weights dequantized to float32, the reference the others are measured against.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from modelbuild.errors import BuildError
from modelrun.model import Model

TEXT = Path("/usr/share/common-licenses/Apache-2.0")


def perplexity(model_dir: Path, text: str, max_tokens: int) -> tuple[float, int]:
    info = json.loads((model_dir / "build-info.json").read_text())
    ids = Tokenizer.from_file(str(model_dir / info["files"]["tokenizer"])).encode(text).ids[:max_tokens]
    run = Model.of_folder(model_dir, info["files"]).conversation()
    logits = run.prefill(ids[:1])
    nll = 0.0
    for token in ids[1:]:
        shifted = logits.astype(np.float64) - logits.max()
        nll -= shifted[token] - math.log(np.exp(shifted).sum())
        logits = run.decode(token)
    return math.exp(nll / (len(ids) - 1)), len(ids)


def report(models_dir: Path, max_tokens: int = 1024) -> list[dict]:
    if not TEXT.is_file():
        raise BuildError(f"{TEXT} is missing", "install Debian's base-files package")
    text = TEXT.read_text()
    rows = []
    for info_path in sorted(models_dir.glob("*/build-info.json")):
        ppl, n = perplexity(info_path.parent, text, max_tokens)
        rows.append({"id": info_path.parent.name, "perplexity": round(ppl, 3), "tokens": n})
        print(f"[quality] {info_path.parent.name}: perplexity {ppl:.3f} over {n} tokens of {TEXT}", flush=True)
    return rows

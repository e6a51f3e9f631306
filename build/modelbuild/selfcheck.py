"""When do the compiled model's greedy tokens "equal" the reference's?

Token for token, except at a near-tie: where the two first differ, the compiled model's choice must
score within TIE_TOLERANCE of the reference's best logit there (both are then right choices, and the
sequences legitimately diverge after it, so comparison stops). float32 kernels differ from the
float64 reference by about 1e-4 in logits; float16 activations by up to a few 0.1.
"""
from __future__ import annotations

import numpy as np

from modelbuild.errors import BuildError

TIE_TOLERANCE = {"float32": 1e-2, "float16": 0.5}


def decisive_check(prompts: list[list[int]], greedy, dtype: str) -> tuple[int, list[int], float]:
    """Which prompt the self-check uses: the first whose greedy answer is decisive, each token leading the
    runner-up by more than TIE_TOLERANCE in the compiled model's logits, so that a browser whose kernels
    round otherwise (a GPU's float16) still answers with the same tokens; else the most decisive one.
    `greedy(ids) -> (tokens, logits)`. Returns the prompt's index, its tokens and their smallest lead."""
    best = None
    for index, ids in enumerate(prompts):
        tokens, logits = greedy(ids)
        lead = min(float(np.diff(np.partition(step, -2)[-2:])[0]) for step in logits)
        if best is None or lead > best[2]:
            best = (index, tokens, lead)
        if lead > TIE_TOLERANCE[dtype]:
            break
    return best


def compare_greedy(compiled: list[int], reference: list[int], reference_logits: list[np.ndarray], dtype: str) -> str:
    for i, (ours, theirs) in enumerate(zip(compiled, reference)):
        if ours == theirs:
            continue
        gap = float(reference_logits[i][theirs] - reference_logits[i][ours])
        if gap <= TIE_TOLERANCE[dtype]:
            return f"{i} tokens equal, then a near-tie (logit gap {gap:.2g}) where the sequences may part"
        raise BuildError(f"self-check failed: at token {i} the compiled model chose {ours}, the numpy reference "
                         f"{theirs} (logit gap {gap:.3g}); compiled {compiled}, reference {reference}",
                         "the compiled kernels are wrong: report this with the build log")
    if len(compiled) != len(reference):
        raise BuildError(f"self-check failed: {len(compiled)} compiled tokens, {len(reference)} reference tokens",
                         "the compiled model stopped differently: report this with the build log")
    return f"all {len(compiled)} greedy tokens equal the reference"

"""The matcher of structured output: one answer's grammar state, applied to the logits at every step.

Before each token the matcher says which tokens may come next, and every other token's logit becomes
-inf, so the sampler cannot produce text outside the schema.
"""
from __future__ import annotations

import time

import numpy as np
import xgrammar


class Constraint:
    """One answer's grammar state: masks the logits before each token and follows the tokens chosen.
    `seconds` adds up the time spent on both: the cost of constraining, which the bench reports."""

    def __init__(self, compiled, vocab_size: int):
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size
        self.seconds = 0.0

    def can_start(self) -> bool:
        """Whether the grammar allows some first token (the mask is computed again for the first token)."""
        return bool(self.mask(np.zeros(self.vocab_size, dtype=np.float32)).max() == 0)

    def accept_text(self, text: str) -> bool:
        """Replays an answer begun elsewhere (a continuation); False when it already breaks the grammar."""
        return self.matcher.accept_string(text)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        self.matcher.fill_next_token_bitmask(self.bitmask)
        bits = self.bitmask.numpy().view(np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: len(logits)].astype(bool)
        masked = np.where(allowed, logits, -np.inf)
        self.seconds += time.perf_counter() - started
        return masked

    def accept(self, token: int) -> None:
        started = time.perf_counter()
        accepted = self.matcher.accept_token(token)
        self.seconds += time.perf_counter() - started
        if not accepted:
            raise RuntimeError(f"the grammar refused token {token}, which its own mask allowed")


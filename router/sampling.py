"""How a token is chosen and where an answer stops, specified once for both engines.

This module and the browser's `webapp/client/lib/engine/sampling.js` implement the same procedure;
`tests/router/test_sampling.py` runs both (the JS under node) on the same inputs and wants the same tokens.
So a `seed` gives the same answer on either path, and an answer handed over mid-way goes on drawing where it
left off.

Choosing one token, at `position` in the answer (0 for its first token):
  1. Temperature 0 is greedy: the lowest id among the largest logits.
  2. Scores: s = (logit - largest logit) / temperature, in float64; a masked logit (-inf) scores -inf.
  3. The nucleus: with top_p < 1, the tokens by weight exp(s), heaviest first (ties: lower id first), up to
     and including the first at which the running sum of weights reaches top_p x the total weight (summed
     in id order, one addition at a time); with top_p = 1, every token.
  4. Noise: token i gets u_i = (mix(key + (i + 1) x 0x6D2B79F5) + 0.5) / 2^32, with key = mix(seed +
     (position + 1) x 0x6D2B79F5), all mod 2^32, where mix is mulberry32's output function. Counter-based:
     u depends only on (seed, position, token), never on what was drawn before.
  5. The token: the nucleus's highest s - log(-log(u_i)) (the Gumbel-max trick: exactly a draw from the
     softmax at that temperature), lowest id on a tie.
Why Gumbel-max and not a walk along the cumulative distribution: the two paths' logits differ in their
last digits (GPU and CPU kernels round differently). A cumulative walk over a flat distribution of 49,152
tokens adds up those differences until the boundaries between tokens move by more than a token's width, so
the paths picked different tokens every few steps; here a token flips only when the top two noisy scores
are within that difference of each other.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

SEED_MAX = 2**32 - 1   # seeds are unsigned 32-bit: the generator's whole state
MAX_STOPS = 4


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None    # None: a fresh random seed per answer (see `seed_of`)
    stop: tuple[str, ...] = ()
    seed_position: int = 0     # the position of this answer's first token: > 0 when it continues one begun elsewhere


class SamplingError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def parse_sampling(body: dict, default_max_tokens: int, max_tokens_limit: int) -> Sampling:
    """OpenAI's sampling fields of a chat request, checked in the order and words of the browser engine's
    parseSampling (sampling.js); raises SamplingError naming the field."""
    def integer(name, value, low, high):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise SamplingError(f"{name} must be an integer from {low} to {high}", name)
        return value

    def number(name, default, low, high):
        value = body.get(name)
        if value is None:
            return default
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise SamplingError(f"{name} must be a number from {low} to {high}", name)
        return float(value)

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = integer("max_tokens", default_max_tokens if max_tokens is None else max_tokens, 1, max_tokens_limit)
    temperature = number("temperature", 1.0, 0, 2)
    top_p = number("top_p", 1.0, 0, 1)
    if top_p == 0:
        raise SamplingError("top_p must be greater than 0", "top_p")
    seed = None if body.get("seed") is None else integer("seed", body["seed"], 0, SEED_MAX)
    position = body.get("seed_position")
    position = 0 if position is None else integer("seed_position", position, 0, max_tokens_limit)
    stop = body.get("stop")
    stop = [] if stop is None or stop == "" else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOPS or not all(isinstance(s, str) for s in stop):
        raise SamplingError(f"stop must be a string or a list of at most {MAX_STOPS} strings", "stop")
    return Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=tuple(stop),
                    seed_position=position)


def seed_of(sampling: Sampling) -> int:
    return secrets.randbits(32) if sampling.seed is None else sampling.seed


GOLDEN = 0x6D2B79F5


def mix(t: np.ndarray) -> np.ndarray:
    """mulberry32's output function on uint32s (numpy's uint32 arithmetic wraps, as JS's Math.imul does)."""
    t = (t ^ (t >> 15)) * (t | 1)
    t ^= t + (t ^ (t >> 7)) * (t | 61)
    return t ^ (t >> 14)


def uniforms(seed: int, position: int, count: int) -> np.ndarray:
    """u_0 .. u_{count-1} for one position of one seed's stream, in (0, 1)."""
    key = mix(np.array([(seed + (position + 1) * GOLDEN) & 0xFFFFFFFF], dtype=np.uint32))
    counters = key + np.arange(1, count + 1, dtype=np.uint32) * np.uint32(GOLDEN)
    return (mix(counters).astype(np.float64) + 0.5) / 2**32


FIRST_FLOOR, FLOOR_STEP = 2.0**-10, 2.0**-16  # the nucleus is looked for among the tokens over a weight floor first
OUT_OF_REACH = -26.1  # Gumbel noise lies in [-3.14, 22.88]: a score further under the top one's (0) cannot win


def sample(logits: np.ndarray, temperature: float, top_p: float, seed: int, position: int) -> int:
    """Steps 1-5, without sorting the whole vocabulary and with noise only where it can matter."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scores = np.subtract(logits, logits.max(), dtype=np.float64)
    scores /= temperature
    ids = np.sort(nucleus(scores, top_p)) if top_p < 1 else np.arange(len(scores))
    ids = ids[scores[ids] >= OUT_OF_REACH]
    noisy = scores[ids] - np.log(-np.log(uniforms_at(seed, position, ids)))
    return int(ids[np.argmax(noisy)])  # ids ascending: the lowest id on a tie


def nucleus(scores: np.ndarray, top_p: float) -> np.ndarray:
    """Step 3's tokens (heaviest first). Only the tokens over a weight floor are sorted: every token under it
    weighs less than any over it, so their walk is the whole vocabulary's as long as it reaches the target
    among them; when it does not, the floor goes lower (at 0, every token is sorted). The target is top_p
    of the weights' sum in index order; numpy's pairwise sum is 10x cheaper and within 2n 2^-53 of it, so
    the sum in order is taken only when the walk's cut lies within that of the pairwise target."""
    weights = np.exp(scores)
    total = weights.sum()
    slack = total * 2 * len(weights) * 2.0**-53
    floor = FIRST_FLOOR
    while True:
        heavy = np.flatnonzero(weights >= floor)
        heaviest = heavy[np.argsort(-weights[heavy], kind="stable")]
        running = np.cumsum(weights[heaviest])
        low, high = np.searchsorted(running, [top_p * (total - slack), top_p * (total + slack)])
        reached = int(low if low == high else np.searchsorted(running, top_p * np.cumsum(weights)[-1]))
        if reached < len(heaviest) or floor == 0:
            return heaviest[:reached + 1]
        floor = 0.0 if floor < 1e-300 else floor * FLOOR_STEP


def uniforms_at(seed: int, position: int, ids: np.ndarray) -> np.ndarray:
    """u_i for the tokens `ids` at one position of one seed's stream (uniforms(), for some tokens only)."""
    key = mix(np.array([(seed + (position + 1) * GOLDEN) & 0xFFFFFFFF], dtype=np.uint32))
    counters = key + (ids.astype(np.uint32) + np.uint32(1)) * np.uint32(GOLDEN)
    return (mix(counters).astype(np.float64) + 0.5) / 2**32


class Detokenizer:
    """An answer's text as its tokens arrive, decoded a few tokens at a time (`decode(ids)`: a window's text):
    the text of the whole answer is the text of its windows one after another. `text` holds only whole
    characters; `pending` the decoded tail that may still become one (ending in U+FFFD). The browser's
    twin is sampling.js's Detokenizer."""

    def __init__(self, decode):
        self.decode, self.ids, self.prefix, self.read, self.text, self.pending = decode, [], 0, 0, "", ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.decode(self.ids[self.prefix:self.read])
        after = self.decode(self.ids[self.prefix:])
        self.pending = after[len(before):]
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += self.pending
            self.pending = ""
            self.prefix, self.read = self.read, len(self.ids)
        return self.text


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is the start of a stop string."""
    return max((n for stop in stops for n in range(min(len(stop) - 1, len(text)), 0, -1)
                if stop.startswith(text[-n:])), default=0)


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


class StreamedText:
    """What an answer shows as its tokens arrive: whole UTF-8 characters only, nothing that may still begin a
    stop string, and the text cut where a stop string begins. `push(token)` gives the piece that became final
    (its text and the token ids drawn since the previous piece) or None; `tail()`, at the end, what was held
    back and the ids not yet sent. The browser's twin is sampling.js's StreamedText, piece for piece
    (tests/router/test_streamed_text.py runs both on the same token streams)."""

    def __init__(self, decode, stops: tuple[str, ...]):
        self.detokenizer, self.stops = Detokenizer(decode), stops
        self.text, self.shown, self.tokens, self.sent, self.stopped = "", "", [], 0, False

    def push(self, token: int) -> tuple[str, list[int]] | None:
        self.tokens.append(token)
        text = self.detokenizer.push(token) + self.detokenizer.pending  # the whole answer, a window at a time
        stop_at = first_stop(text, self.stops)
        if stop_at is not None:
            text, self.stopped = text[:stop_at], True
        self.text = text
        ready = text if self.stopped else text[:len(text) - held_back(text, self.stops)]
        if ready.endswith("\ufffd") or len(ready) <= len(self.shown):
            return None
        return self._piece(ready)

    def tail(self) -> tuple[str, list[int]] | None:
        if len(self.text) <= len(self.shown) and self.sent == len(self.tokens):
            return None
        return self._piece(self.text.rstrip("\ufffd"))

    def _piece(self, upto: str) -> tuple[str, list[int]]:
        piece = (upto[len(self.shown):], self.tokens[self.sent:])
        if len(upto) > len(self.shown):
            self.shown = upto
        self.sent = len(self.tokens)
        return piece

"""What an answer is, whichever backend gives it (the embedded engine or an upstream): a stream of Chunks,
or an EngineError before the first. TVM-free, so that a server with only an upstream never loads TVM."""
from __future__ import annotations

from dataclasses import dataclass, field

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code: an OpenAI client reads it as "prompt too long"


class EngineError(Exception):
    """A request the engine cannot serve; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


@dataclass
class Chunk:
    """One piece of an answer: new text, and at the end the finish reason and token counts."""
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # the answer's tokens so far (its last chunk: all of them)
    token_ids: list[int] = field(default_factory=list)  # the tokens drawn since the previous chunk
    ttft_s: float = 0.0    # on the last chunk: from the engine taking the answer (not the queue) to its first token
    engine_s: float = 0.0  # and how long the answer held the engine
    cached_tokens: int = 0  # and how many of its prompt's tokens a kept conversation's cache already held

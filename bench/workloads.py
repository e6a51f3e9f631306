"""What each engine is asked: the same messages, greedy sampling and output length for every engine.

- load: a fresh start (cold: empty browser cache, so download + compile; warm: from the cache) until the
  first token of a short prompt.
- short: a ~32-token prompt and DECODE_TOKENS generated tokens (time to first token, decode speed).
- long: a ~512-token prompt (the start of the Apache-2.0 license text Debian ships) and a few tokens
  (time to first token, prefill speed).
- json_text, json_schema: one prompt answered as free text and constrained to a JSON schema (Seam's
  engines only; the peers have no such mode here): the cost of constraining.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

LICENSE = Path("/usr/share/common-licenses/Apache-2.0")
SYSTEM = {"role": "system", "content": "Answer in JSON."}
SHOPPING = [SYSTEM, {"role": "user", "content": "A shopping list with apples and bread, as JSON."}]
SHOPPING_SCHEMA = {"type": "object", "required": ["items"], "properties": {
    "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": {
        "type": "object", "required": ["name", "qty"], "properties": {
            "name": {"type": "string", "maxLength": 12},
            "qty": {"type": "integer", "minimum": 1, "maximum": 99}}}}}}


@dataclass(frozen=True)
class Workload:
    name: str
    messages: list
    max_tokens: int
    response_format: dict | None = None
    kind: str = "generate"  # or "load"
    seam_only: bool = False

    def request(self) -> dict:
        body = {"messages": self.messages, "max_tokens": self.max_tokens, "temperature": 0}
        if self.response_format:
            body["response_format"] = self.response_format
        return body


def workloads(tokenizer_json: Path, decode_tokens: int = 128, long_prompt_tokens: int = 512,
              schema_tokens: int = 40) -> list[Workload]:
    # 31 tokens with the chat template; greedy, the default model writes past 128 tokens (a "be brief"
    # prompt stopped at 49, and decode speed would be over fewer tokens than asked for).
    short = [{"role": "system", "content": "Be thorough."},
             {"role": "user", "content": "Explain in detail, in several paragraphs, why the sky is blue."}]
    return [
        Workload("load", short, 1, kind="load"),
        Workload("short", short, decode_tokens),
        Workload("long", [{"role": "user", "content": "Summarize this text:\n\n" +
                           leading_tokens(tokenizer_json, LICENSE.read_text(), long_prompt_tokens)}], 4),
        Workload("json_text", SHOPPING, schema_tokens, seam_only=True),
        Workload("json_schema", SHOPPING, schema_tokens,
                 {"type": "json_schema", "json_schema": {"name": "shopping", "schema": SHOPPING_SCHEMA}},
                 seam_only=True),
    ]


def leading_tokens(tokenizer_json: Path, text: str, count: int) -> str:
    """The start of `text` that is `count` tokens long (whole words), by the model's own tokenizer."""
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    words = " ".join(text.split()).split(" ")
    low, high = 1, len(words)
    while low < high:  # the longest prefix of words within `count` tokens
        middle = (low + high + 1) // 2
        if len(tokenizer.encode(" ".join(words[:middle]), add_special_tokens=False).ids) <= count:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])

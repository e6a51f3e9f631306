"""What each engine is asked: the same messages, sampling and output length for every engine."""
from __future__ import annotations

from dataclasses import dataclass

SYSTEM = {"role": "system", "content": "Answer in JSON."}
SHOPPING = [SYSTEM, {"role": "user", "content": "A shopping list with apples and bread, as JSON."}]
SHOPPING_SCHEMA = {"type": "object", "required": ["items"], "properties": {
    "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": {
        "type": "object", "required": ["name", "qty"], "properties": {
            "name": {"type": "string", "maxLength": 12},
            "qty": {"type": "integer", "minimum": 1, "maximum": 99}}}}}}
DECODE_TOKENS = 40  # the schema's answer is about 47 tokens, so both modes decode the full count

@dataclass(frozen=True)
class Workload:
    name: str
    messages: list
    max_tokens: int
    response_format: dict | None = None

    def request(self) -> dict:
        body = {"messages": self.messages, "max_tokens": self.max_tokens, "temperature": 0}
        if self.response_format:
            body["response_format"] = self.response_format
        return body

WORKLOADS = [
    Workload("text", SHOPPING, DECODE_TOKENS),
    Workload("json_schema", SHOPPING, DECODE_TOKENS,
             {"type": "json_schema", "json_schema": {"name": "shopping", "schema": SHOPPING_SCHEMA}}),
]

"""Structured output: OpenAI's `response_format` turned into a token mask applied at every decoding step.

xgrammar compiles the JSON schema against the model's vocabulary; before each token the matcher says
which tokens may come next, and every other token's logit becomes -inf, so the sampler cannot produce
text outside the schema. The browser engine does the same with @mlc-ai/web-xgrammar, with the same
JSON style (below, sent to the page in its config) so both paths produce the same tokens.
"""
from __future__ import annotations

import json
import re
import threading
import time

import jsonschema
import numpy as np
import xgrammar

# One JSON layout for both paths: compact, with a space after ',' and ':' (the way json.dumps writes),
# and no free whitespace, which small models otherwise fill until max_tokens.
JSON_STYLE = {"any_whitespace": False, "separators": [", ", ": "]}
# Keywords xgrammar 0.2.8 compiles without enforcing (measured: the grammar still admits what they
# forbid). A schema using them is refused, because output could then break the schema.
UNSUPPORTED_KEYWORDS = ("uniqueItems", "contains", "minContains", "maxContains", "if", "then", "else",
                        "dependentRequired", "dependentSchemas", "not")
JSON_OBJECT_SCHEMA = {"type": "object"}  # OpenAI's json_object: any JSON object
# The page's schema box starts with this example.
EXAMPLE_SCHEMA = {"type": "object", "properties": {
    "answer": {"type": "string", "maxLength": 200},
    "confidence": {"enum": ["low", "medium", "high"]}}, "required": ["answer", "confidence"]}


class SchemaError(ValueError):
    """A response_format that cannot be enforced; `param` names the offending part."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def parse_response_format(value) -> dict | None:
    """OpenAI's shapes, checked: None or {"type": "text"} -> None; json_object -> {"schema", "strict": False};
    json_schema -> {"schema", "strict": True}; both with "openai": the value as given (for an upstream)."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise SchemaError('response_format must be {"type": "text"}, {"type": "json_object"} or '
                          '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
                          "response_format.type")
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return {"schema": JSON_OBJECT_SCHEMA, "strict": False, "openai": value}
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise SchemaError("response_format.json_schema.schema must be a JSON schema object",
                          "response_format.json_schema.schema")
    check_schema(spec["schema"])
    return {"schema": spec["schema"], "strict": True, "openai": value}


def check_schema(schema: dict) -> None:
    """Valid JSON Schema (2020-12), and nothing in it the grammar would silently ignore."""
    base = "response_format.json_schema.schema"
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise SchemaError(f"invalid JSON schema at {path_of(base, error.path)}: {error.message}",
                          path_of(base, error.path)) from None
    for path, keyword, value in keywords(schema):
        where = path_of(base, [*path, keyword])
        if keyword in UNSUPPORTED_KEYWORDS and not (keyword == "uniqueItems" and value is False):
            raise SchemaError(f"{where}: the keyword {keyword!r} cannot be enforced while generating; "
                              "remove it (and check it after generation if you need it)", where)
        if keyword == "$ref" and resolve(schema, value) is None:
            raise SchemaError(f"{where}: {value!r} does not point into this schema (only \"#/...\" references "
                              "are followed)", where)


def resolve(root: dict, ref) -> dict | None:
    """The subschema a local JSON pointer ("#/$defs/x") names, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for step in filter(None, ref[1:].split("/")):
        step = step.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node


def keywords(node, path=()):
    """(path of the enclosing schema, keyword, value) for every keyword of every subschema."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield path, key, child
            if key in ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas"):
                for name, sub in (child.items() if isinstance(child, dict) else []):
                    yield from keywords(sub, (*path, key, name))
            elif key in ("items", "additionalProperties", "not", "if", "then", "else", "contains",
                         "propertyNames", "unevaluatedProperties", "unevaluatedItems"):
                yield from keywords(child, (*path, key))
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(child, list):
                for i, sub in enumerate(child):
                    yield from keywords(sub, (*path, key, i))


def path_of(base: str, steps) -> str:
    return base + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)


class Grammars:
    """Compiles response formats for one model's vocabulary (compiled grammars are cached by xgrammar)."""

    def __init__(self, tokenizer, config: dict):
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        encoded = [""] * config["vocab_size"]
        for token, token_id in vocab.items():
            if token_id < len(encoded):
                encoded[token_id] = token
        info = config.get("tokenizer_info")
        if info is None:
            raise SchemaError("this model was built before structured output existed (its mlc-chat-config.json "
                              "has no tokenizer_info): rebuild it with `make build-model`", "model")
        self.info = xgrammar.TokenizerInfo(encoded, xgrammar.VocabType[info["vocab_type"].upper()],
                                           vocab_size=config["vocab_size"], stop_token_ids=config["stop_token_ids"],
                                           add_prefix_space=info["add_prefix_space"])
        self.compiler = xgrammar.GrammarCompiler(self.info, max_threads=1)
        self.lock = threading.Lock()

    def constraint(self, response_format: dict) -> "Constraint":
        try:
            with self.lock:
                compiled = self.compiler.compile_json_schema(
                    json.dumps(response_format["schema"]), strict_mode=response_format["strict"],
                    any_whitespace=JSON_STYLE["any_whitespace"], separators=tuple(JSON_STYLE["separators"]))
        except RuntimeError as error:
            raise SchemaError(f"the schema cannot be compiled to a grammar: {xgrammar_message(error)}",
                              "response_format.json_schema.schema") from None
        return Constraint(compiled, self.info.vocab_size)


class Constraint:
    """One answer's grammar state: masks the logits before each token and follows the tokens chosen.
    `seconds` adds up the time spent on both: the cost of constraining, which the bench reports."""

    def __init__(self, compiled, vocab_size: int):
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        self.seconds = 0.0

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


def xgrammar_message(error: Exception) -> str:
    """xgrammar's C++ errors start with a timestamp and a source location; keep the sentence."""
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", str(error).strip().splitlines()[0])

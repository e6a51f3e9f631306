"""Schemas and prompts that both paths' structured-output tests use (server: tests/router, browser: tests/webapp),
and the bad schemas both must refuse.

Strings and arrays are bounded so that even a sampled answer ends well within max_tokens; the short
system prompt keeps prompts short for SwiftShader (the model's default one is about 20 tokens).
"""
SYSTEM = {"role": "system", "content": "Answer in JSON."}

CASES = [
    {"name": "nested-object-enum-bounds",
     "messages": [SYSTEM, {"role": "user", "content": "Ann is 31 and lives in Paris, France. Describe her as JSON."}],
     "schema": {"type": "object", "required": ["name", "age", "home"], "properties": {
         "name": {"type": "string", "maxLength": 16},
         "age": {"type": "integer", "minimum": 0, "maximum": 120},
         "home": {"type": "object", "required": ["city", "continent"], "properties": {
             "city": {"type": "string", "maxLength": 16},
             "continent": {"enum": ["Africa", "America", "Asia", "Europe", "Oceania"]}}}}},
     "max_tokens": 96},
    {"name": "array-of-enums",
     "messages": [SYSTEM, {"role": "user", "content": "List two primary colors."}],
     "schema": {"type": "object", "required": ["colors"], "properties": {
         "colors": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"enum": ["red", "yellow", "blue"]}}}},
     "max_tokens": 48},
    {"name": "numbers-with-bounds",
     "messages": [SYSTEM, {"role": "user", "content": "Rate pizza from 1 to 5 and say how many slices you would eat."}],
     "schema": {"type": "object", "required": ["rating", "slices", "hungry"], "properties": {
         "rating": {"type": "number", "minimum": 1, "maximum": 5},
         "slices": {"type": "integer", "minimum": 0, "maximum": 12},
         "hungry": {"type": "boolean"}}},
     "max_tokens": 64},
    {"name": "array-of-objects",
     "messages": [SYSTEM, {"role": "user", "content": "A shopping list with apples and bread, as JSON."}],
     "schema": {"type": "object", "required": ["items"], "properties": {
         "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
             "type": "object", "required": ["name", "qty"], "properties": {
                 "name": {"type": "string", "maxLength": 12},
                 "qty": {"type": "integer", "minimum": 1, "maximum": 99}}}}}},
     "max_tokens": 128},
]


def response_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def nested(levels):
    schema = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


BAD_SCHEMAS = [  # (response_format, what its error must name): the browser engine's and the server's refusals
    (response_format({"type": "object", "properties": {"age": {"type": "whole number"}}}), "properties.age.type"),
    (response_format({"type": "array", "items": {"type": "string"}, "uniqueItems": True}), "uniqueItems"),
    (response_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}), "properties.a.$ref"),
    # Valid JSON Schema that xgrammar cannot compile: web-xgrammar aborts its wasm instance on it, and the
    # engine must still answer the next request.
    (response_format({"type": "string", "pattern": "\\bword"}), "Word boundary is not supported"),
    # The server's limits (router/grammar/schema_checks.py SCHEMA_LIMITS), checked in the page with the same words.
    (response_format({"enum": ["a" * 9000, "b" * 9000]}), "too long to compile quickly"),
    (response_format(nested(20)), "nests objects and lists"),  # 41 deep (Playwright cannot pass 100)
    (response_format({"$ref": "#"}), "leads back to itself"),
    (response_format({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}),
     "not in properties"),
]

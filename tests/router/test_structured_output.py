"""Structured output on the server: `response_format` constrains the real default model's tokens (xgrammar).

Every answer must parse and validate against its schema, greedy or sampled; bad schemas are refused
with a 400 that names the offending part; an answer cut by max_tokens says "length".
"""
import json

import jsonschema
import pytest

from tests.router.conftest import assert_error
from tests.structured import CASES, response_format


def ask(client, case, **sampling):
    body = {"messages": case["messages"], "response_format": response_format(case["schema"]),
            "max_tokens": case["max_tokens"], **sampling}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["choices"][0]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "top_p": 1.0, "seed": 7}],
                         ids=["greedy", "sampled"])
def test_every_answer_parses_and_validates(client, case, sampling):
    choice = ask(client, case, **sampling)
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(json.loads(choice["message"]["content"]), case["schema"])


PARIS_AS_JSON = [{"role": "user", "content": "Describe Paris as a JSON object with name and country."}]


def test_json_object_mode_gives_a_json_object(client):
    body = {"messages": PARIS_AS_JSON, "response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 64}
    choice = client.post("/v1/chat/completions", json=body).get_json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert isinstance(json.loads(choice["message"]["content"]), dict)


def test_json_object_cut_by_max_tokens_is_the_start_of_an_object(client):
    body = {"messages": PARIS_AS_JSON, "response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 6}
    choice = client.post("/v1/chat/completions", json=body).get_json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"].startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])


def test_max_tokens_mid_object_says_length(client):
    choice = ask(client, {**CASES[0], "max_tokens": 4}, temperature=0)
    assert choice["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])


def test_a_continuation_keeps_to_the_schema(client):
    """The hybrid seam hands a half-written JSON answer over: the server goes on within the schema."""
    case = CASES[0]
    whole = ask(client, case, temperature=0)["message"]["content"]
    shown = whole[: len(whole) // 2]
    body = {"messages": [*case["messages"], {"role": "assistant", "content": shown}], "continue_final_message": True,
            "response_format": response_format(case["schema"]), "temperature": 0, "max_tokens": case["max_tokens"]}
    rest = client.post("/v1/chat/completions", json=body).get_json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(shown + rest), case["schema"])
    body["messages"][-1]["content"] = "not json"
    assert_error(client.post("/v1/chat/completions", json=body), 400, "continue_final_message", "invalid_schema")


BAD_FORMATS = [
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": "an object"}}, "response_format.json_schema.schema"),
    (response_format({"type": "object", "properties": {"age": {"type": "whole number"}}}),
     "response_format.json_schema.schema.properties.age.type"),
    (response_format({"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}),
     "response_format.json_schema.schema.properties.n.minimum"),
    (response_format({"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
     "response_format.json_schema.schema.uniqueItems"),
    (response_format({"type": "object", "properties": {"a": {"if": {"type": "string"}}}}),
     "response_format.json_schema.schema.properties.a.if"),
    (response_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
     "response_format.json_schema.schema.properties.a.$ref"),
]


@pytest.mark.parametrize("fmt,param", BAD_FORMATS)
def test_a_bad_schema_is_a_400_naming_the_part(client, fmt, param):
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    response = client.post("/v1/chat/completions", json=body)
    assert_error(response, 400, param)
    assert param.rsplit(".", 1)[-1] in response.get_json()["error"]["message"]


def test_a_schema_the_grammar_cannot_compile_is_a_400(client):
    """Valid JSON Schema (Python's re takes \\b), but xgrammar's regex support does not."""
    fmt = response_format({"type": "string", "pattern": "\\bword"})
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                          "response_format": fmt})
    assert_error(response, 400, "response_format.json_schema.schema", "invalid_schema")
    assert "Word boundary is not supported" in response.get_json()["error"]["message"]


def test_text_format_is_plain_generation(client):
    body = {"messages": [{"role": "user", "content": "Say hi."}], "temperature": 0, "max_tokens": 6}
    plain = client.post("/v1/chat/completions", json=body).get_json()
    text = client.post("/v1/chat/completions", json={**body, "response_format": {"type": "text"}}).get_json()
    assert plain["choices"][0]["message"] == text["choices"][0]["message"]


def test_the_browser_refuses_bad_schemas_in_the_servers_words():
    """The page's schema checks (grammar.js, under node) against the server's, on the same schemas: the
    same message wherever both check; where the server's JSON Schema validator speaks (a schema that is not
    valid JSON Schema), the browser names the same place."""
    from router import grammar
    from tests.node import run_js
    from tests.webapp.test_structured_output import BAD
    rules = {"json_style": grammar.JSON_STYLE, "unsupported_keywords": list(grammar.UNSUPPORTED_KEYWORDS),
             "limits": grammar.SCHEMA_LIMITS}
    server = []
    for response_format_, _ in BAD:
        try:
            grammar.parse_response_format(response_format_)
            server.append(None)
        except grammar.SchemaError as error:
            server.append(str(error))
    browser = run_js("""return data.formats.map((format) => {
        try { modules.grammar.parseResponseFormat(format, data.rules); return null; }
        catch (error) { return error.message; }
    });""", {"formats": [f for f, _ in BAD], "rules": rules})
    for (_, named), ours, theirs in zip(BAD, server, browser):
        if ours is None:  # valid JSON Schema that only xgrammar refuses: both leave it to the compiler
            assert theirs is None
        elif ours.startswith("invalid JSON schema at "):
            assert theirs.split(": ")[0] == ours.split(": ")[0], (ours, theirs)
        else:
            assert theirs == ours
    assert sum(m is not None and not m.startswith("invalid JSON") for m in server) >= 5

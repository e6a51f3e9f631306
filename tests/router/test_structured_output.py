"""Structured output on the server: `response_format` constrains the real default model's tokens (xgrammar).

Every answer must parse and validate against its schema, greedy or sampled; bad schemas are refused
with a 400 that names the offending part; an answer cut by max_tokens says "length".
"""
import json

import jsonschema
import pytest

from router import grammar
from tests.support.api import assert_error
from tests.support.node import run_js
from tests.support.structured import BAD_SCHEMAS, CASES, response_format


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
def test_a_bad_schema_is_a_400_naming_the_part(tiny_client, fmt, param):
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": fmt}
    response = tiny_client.post("/v1/chat/completions", json=body)
    assert_error(response, 400, param)
    assert param.rsplit(".", 1)[-1] in response.get_json()["error"]["message"]


def test_a_schema_the_grammar_cannot_compile_is_a_400(tiny_client):
    """Valid JSON Schema (Python's re takes \\b), but xgrammar's regex support does not."""
    fmt = response_format({"type": "string", "pattern": "\\bword"})
    response = tiny_client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
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
    rules = {"json_style": grammar.JSON_STYLE, "unsupported_keywords": list(grammar.UNSUPPORTED_KEYWORDS),
             "limits": grammar.SCHEMA_LIMITS}
    server = []
    for response_format_, _ in BAD_SCHEMAS:
        try:
            grammar.parse_response_format(response_format_)
            server.append(None)
        except grammar.SchemaError as error:
            server.append(str(error))
    browser = run_js("""return data.formats.map((format) => {
        try { modules.grammar.parseResponseFormat(format, data.rules); return null; }
        catch (error) { return error.message; }
    });""", {"formats": [f for f, _ in BAD_SCHEMAS], "rules": rules})
    for (_, named), ours, theirs in zip(BAD_SCHEMAS, server, browser):
        if ours is None:  # valid JSON Schema that only xgrammar refuses: both leave it to the compiler
            assert theirs is None
        elif ours.startswith("invalid JSON schema at "):
            assert theirs.split(": ")[0] == ours.split(": ")[0], (ours, theirs)
        else:
            assert theirs == ours
    assert sum(m is not None and not m.startswith("invalid JSON") for m in server) >= 5


# --- what xgrammar compiles without enforcing, and loops of references: refused before compiling -----------
# Measured with xgrammar 0.2.8 (below, test_xgrammar_still_admits_what_these_refusals_forbid) and
# web-xgrammar 0.1.27 under node: both ignore what these schemas ask, or build a grammar no token can start.

BASE = "response_format.json_schema.schema"
LOOP = {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}
RING = {"$defs": {f"d{i}": {"$ref": f"#/$defs/d{(i + 1) % 800}"} for i in range(800)}, "$ref": "#/$defs/d0"}
TAGGED = {"$defs": {"A": {"type": "object", "properties": {"k": {"const": "a"}, "x": {"type": "integer"}},
                          "required": ["k", "x"]},
                    "B": {"type": "object", "properties": {"k": {"const": "b"}, "y": {"type": "string"}},
                          "required": ["k", "y"]}},
          "oneOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/B"}]}
UNENFORCED = [  # (schema, the part its refusal names, words of the refusal)
    ({"allOf": [{"type": "integer", "minimum": 5}, {"type": "integer", "maximum": 10}]}, "allOf",
     '"allOf" with more than one schema'),
    ({"type": "integer", "allOf": [{"minimum": 5}]}, "type", '"type" beside "allOf" cannot be enforced'),
    ({"type": "integer", "multipleOf": 3, "minimum": 0, "maximum": 100000}, "multipleOf",
     'the keyword "multipleOf" cannot be enforced'),
    ({"type": "number", "multipleOf": 0.5}, "multipleOf", 'the keyword "multipleOf" cannot be enforced'),
    ({"oneOf": [{"type": "integer", "minimum": 0}, {"type": "integer", "maximum": 10}]}, "oneOf", 'use "anyOf"'),
    ({"oneOf": [{"enum": ["a", "b"]}, {"enum": ["b", "c"]}]}, "oneOf", "a value may match several"),
    ({"oneOf": [{"const": 1}, {"const": 1.0}]}, "oneOf", "a value may match several"),
    ({"type": "integer", "maximum": 10, "anyOf": [{"type": "integer", "minimum": 5}]}, "type",
     '"type" beside "anyOf"'),
    ({"$defs": {"o": {"type": "object", "properties": {"a": {"type": "integer"}}}}, "$ref": "#/$defs/o",
      "required": ["a"]}, "required", '"required" beside "$ref"'),
    (LOOP, "$defs.a.anyOf[0].$ref", "leads back to itself"),
    ({"anyOf": [{"$ref": "#"}, {"type": "integer"}]}, "anyOf[0].$ref", "leads back to itself"),
    ({"$defs": {"a": {"oneOf": [{"$ref": "#/$defs/b"}]}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
      "$ref": "#/$defs/a"}, "$defs.a.oneOf[0].$ref", "leads back to itself"),
    (RING, "$defs.d0.$ref", "leads back to itself"),  # 800 references round: no recursion to run out of
]
ENFORCED = [  # schemas like those above that the grammar does enforce: (schema, an answer, one breaking it)
    ({"description": "one schema", "allOf": [{"type": "integer", "minimum": 5, "maximum": 9}]}, "7", "3"),
    ({"oneOf": [{"const": "a"}, {"enum": ["b", "c"]}]}, '"b"', '"d"'),
    (TAGGED, '{"k": "a", "x": 1}', '{"k": "a", "y": "s"}'),
    ({"anyOf": [{"type": "integer", "minimum": 5}, {"type": "null"}], "default": None, "title": "n"}, "null", "3"),
    ({"$defs": {"n": {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "array", "items": {"$ref": "#/$defs/n"}}]}},
      "$ref": "#/$defs/n"}, '[["ab"], "c"]', '["abc"]'),  # a loop through items reads '[' first: allowed
    ({"type": "integer", "multipleOf": 3}, "6", "7"),  # enforced here, yet refused: web-xgrammar ignores it
]


def refusal(schema):
    with pytest.raises(grammar.SchemaError) as caught:
        grammar.parse_response_format(response_format(schema))
    return caught.value


@pytest.mark.parametrize("schema,part,words", UNENFORCED, ids=[f"{p}:{w}" for _, p, w in UNENFORCED])
def test_what_the_grammar_would_not_enforce_is_refused_naming_the_part(schema, part, words):
    error = refusal(schema)
    assert error.param == f"{BASE}.{part}" and str(error).startswith(f"{error.param}: ") and words in str(error)


@pytest.mark.parametrize("schema", [s for s, _, _ in ENFORCED[:-1]])
def test_what_the_grammar_enforces_stays_allowed(schema):
    assert grammar.parse_response_format(response_format(schema))["schema"] == schema


def admits(schema, text):
    """Whether xgrammar's grammar for `schema` (the server's JSON style) takes `text` as a whole answer,
    over a vocabulary of single characters."""
    import xgrammar
    vocab = [chr(i) for i in range(32, 127)] + ["</s>"]
    info = xgrammar.TokenizerInfo(vocab, xgrammar.VocabType.RAW, vocab_size=len(vocab), stop_token_ids=[len(vocab) - 1])
    compiled = xgrammar.GrammarCompiler(info, max_threads=1).compile_json_schema(
        json.dumps(schema), strict_mode=True, any_whitespace=False, separators=tuple(grammar.JSON_STYLE["separators"]))
    matcher = xgrammar.GrammarMatcher(compiled)
    return matcher.accept_string(text) and matcher.accept_token(len(vocab) - 1)


@pytest.mark.parametrize("schema,answer,breaking", ENFORCED)
def test_xgrammar_enforces_what_stays_allowed(schema, answer, breaking):
    jsonschema.validate(json.loads(answer), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(breaking), schema)
    assert admits(schema, answer) and not admits(schema, breaking)


# An answer the grammar takes that breaks the schema, for each of the first UNENFORCED (the loops compile
# to grammars that take nothing at all).
BREAKING = ["3", "3", "7", "1.3", "5", '"b"', "1", "12", "{}"]


@pytest.mark.parametrize("schema,breaking", [(s, b) for (s, _, _), b in zip(UNENFORCED, BREAKING)])
def test_xgrammar_still_admits_what_these_refusals_forbid(schema, breaking):
    """The reason for each refusal above. Should this fail after an upgrade of xgrammar, that refusal may go
    (for the page, check web-xgrammar too)."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(breaking), schema)
    assert admits(schema, breaking)


@pytest.fixture(scope="module")
def bare_client(tmp_path_factory):
    """The app over an empty models folder: a schema is refused before any model is needed."""
    from router import create_app
    folder = tmp_path_factory.mktemp("bare")
    app = create_app({"MODELS_DIR": str(folder / "models"), "TESTING": True, "FLEET_DB": str(folder / "f.sqlite3")})
    return app.test_client()


def test_each_refusal_is_a_400_naming_the_part_over_http(bare_client):
    for schema, part, words in UNENFORCED:
        body = {"messages": [{"role": "user", "content": "hi"}], "response_format": response_format(schema)}
        response = bare_client.post("/v1/chat/completions", json=body)
        assert_error(response, 400, f"{BASE}.{part}", "invalid_schema")
        assert words in response.get_json()["error"]["message"]


def test_the_browser_refuses_what_the_grammar_would_not_enforce_in_the_same_words():
    rules = {"json_style": grammar.JSON_STYLE, "unsupported_keywords": list(grammar.UNSUPPORTED_KEYWORDS),
             "limits": grammar.SCHEMA_LIMITS}
    schemas = [s for s, _, _ in UNENFORCED] + [s for s, _, _ in ENFORCED[:-1]]
    browser = run_js("""return data.schemas.map((schema) => {
        try { modules.grammar.parseResponseFormat({type: "json_schema", json_schema: {name: "x", schema}}, data.rules);
              return null; }
        catch (error) { return error.message; }
    });""", {"schemas": schemas, "rules": rules})
    assert browser == [str(refusal(s)) for s, _, _ in UNENFORCED] + [None] * (len(ENFORCED) - 1)


class CharTokenizer:
    """A vocabulary of single characters, for compiling grammars without a model."""

    def get_vocab(self, with_added_tokens=True):
        return {chr(i): i - 32 for i in range(32, 127)} | {"</s>": 95}


@pytest.fixture(scope="module")
def grammars():
    config = {"vocab_size": 96, "stop_token_ids": [95], "tokenizer_info": {"vocab_type": "raw", "add_prefix_space": False}}
    compilers = grammar.Grammars(CharTokenizer(), config, timeout_s=30, processes=1)
    yield compilers
    while not compilers.idle.empty():
        compilers.idle.get().stop()


def test_a_grammar_no_token_can_start_is_a_schema_error_not_a_500(grammars):
    """Should check_schema miss a loop, the compiled grammar allows no first token: every logit would be
    -inf and the sampler would fail. Compiled here past check_schema, it is refused."""
    with pytest.raises(grammar.SchemaError, match="no JSON value can start it"):
        grammars.constraint({"schema": LOOP, "strict": True})
    assert grammars.constraint({"schema": {"type": "integer"}, "strict": True}).accept_text("12")  # the same compiler


def test_xgrammars_failed_checks_read_as_sentences(grammars):
    with pytest.raises(grammar.SchemaError) as caught:
        grammars.constraint({"schema": {"type": "integer", "minimum": 1e30}, "strict": True})
    assert str(caught.value) == "the schema cannot be compiled to a grammar: Integer exceeds maximum limit"


def test_any_exception_of_the_compile_is_an_answer_not_a_dead_compiler(monkeypatch):
    """A compile that fails with something else than RuntimeError still answers its message (the child
    used to die on it, and the parent saw only that the compiler stopped)."""

    class Failing:
        def __init__(self, *args, **kwargs):
            pass

        def compile_json_schema(self, *args, **kwargs):
            raise ValueError("[04:24:11] /project/cpp/json_schema_converter.cc:99: not a schema it can read")

    class Pipe:
        def __init__(self):
            self.requests, self.answers = [("json_schema", "{}", True)], []

        def recv(self):
            if not self.requests:
                raise EOFError
            return self.requests.pop()

        def send(self, answer):
            self.answers.append(answer)

    from router.grammar import compilers
    monkeypatch.setattr(compilers.xgrammar, "GrammarCompiler", Failing)
    monkeypatch.setattr(compilers, "tokenizer_info", lambda vocab: None)
    conn = Pipe()
    compilers.compiler_main(conn, {})
    assert conn.answers == [(False, "not a schema it can read")]

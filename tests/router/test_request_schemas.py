"""Every request body the API takes has a JSON schema (router/schemas/), checked one way (router/validation.py):
a body its schema refuses is a 400 whose param names the field, in the words of the one formatter."""
import json

import jsonschema
import pytest

from router import create_app
from router.validation import SCHEMAS, describe, schema, validator
from tests.support.api import assert_error
from tests.support.models import catalog_of


@pytest.fixture(scope="module")
def tiny(tiny_built, tmp_path_factory):
    """A test client over the tiny model's catalog (no real model needed), and a variant id in it."""
    models = tiny_built[1]
    app = create_app({"MODELS_DIR": str(models), "TESTING": True,
                      "FLEET_DB": str(tmp_path_factory.mktemp("fleet") / "fleet.sqlite3")})
    return app.test_client(), catalog_of(models)["models"][0]["id"]


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_every_schema_is_valid_draft_2020_12(path):
    loaded = json.loads(path.read_text())
    assert loaded["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(loaded)


PROBE = {"schema_version": 1, "webgpu": {"available": True}}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
OUTCOME = {"target": "browser", "predicted": {"ttft_s": 2.0}, "actual": {"ttft_s": 3.0}}
SELF_CHECK = {"id": "(the catalog's)", "version": "x", "passed": True, "client_id": "client-aaaaaaaa"}
ENDPOINTS = {"/api/route": "probe-report.v1.json", "/v1/chat/completions": "chat-completions-request.v1.json",
             "/api/outcome": "outcome-report.v1.json", "/api/self-check": "self-check-report.v1.json"}
REFUSED = [  # (endpoint, body, the param that names the field)
    ("/api/route", {"schema_version": 1}, "webgpu"),
    ("/api/route", {**PROBE, "cached_models": [{"id": "x"}]}, "cached_models[0].version"),
    ("/api/route", {**PROBE, "client_id": "short"}, "client_id"),
    ("/api/route", {**PROBE, "surprise": 1}, "surprise"),
    ("/v1/chat/completions", {}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("/v1/chat/completions", {**CHAT, "model": 5}, "model"),
    ("/v1/chat/completions", {**CHAT, "n": 2}, "n"),
    ("/v1/chat/completions", {**CHAT, "stream": "yes"}, "stream"),
    ("/v1/chat/completions", {**CHAT, "continue_final_message": 1}, "continue_final_message"),
    ("/v1/chat/completions", {**CHAT, "continue_token_ids": [-1]}, "continue_token_ids[0]"),
    ("/api/outcome", {"predicted": {}, "actual": {}}, "target"),
    ("/api/outcome", {**OUTCOME, "predicted": {"ttft_s": 0}}, "predicted.ttft_s"),
    ("/api/outcome", {**OUTCOME, "actual": "fast"}, "actual"),
    ("/api/self-check", {**SELF_CHECK, "version": None}, "version"),
    ("/api/self-check", {**SELF_CHECK, "client_id": "short"}, "client_id"),
    ("/api/self-check", {**SELF_CHECK, "token_ids": [1] * 257}, "token_ids"),
    ("/api/self-check", {**SELF_CHECK, "token_ids": [2**31]}, "token_ids[0]"),
    ("/api/self-check", {**SELF_CHECK, "adapter": "a" * 201}, "adapter"),
]


def with_id(body: dict, variant: str) -> dict:
    return {**body, "id": variant} if "id" in body else body


@pytest.mark.parametrize("path,body", [("/api/route", PROBE), ("/v1/chat/completions", CHAT),
                                       ("/api/outcome", OUTCOME), ("/api/self-check", SELF_CHECK)])
def test_a_body_the_api_takes_follows_its_schema(path, body):
    assert validator(ENDPOINTS[path]).is_valid(body)


@pytest.mark.parametrize("path,body,param", REFUSED, ids=[f"{p}:{n}" for p, _, n in REFUSED])
def test_a_body_its_schema_refuses_is_a_400_naming_the_field(tiny, path, body, param):
    client, variant = tiny
    body = with_id(body, variant)
    error = jsonschema.exceptions.best_match(validator(ENDPOINTS[path]).iter_errors(body))
    assert error is not None, "the schema takes this body"
    response = client.post(path, json=body)
    assert_error(response, 400, param)
    # the one formatter's words, whichever endpoint
    assert response.get_json()["error"]["message"] == describe(error, "request body")[0]
    assert param in response.get_json()["error"]["message"]


def test_the_same_error_reads_the_same_on_every_endpoint(tiny):
    client, variant = tiny
    assert schema("probe-report.v1.json")["properties"]["client_id"] == \
        schema("self-check-report.v1.json")["properties"]["client_id"]  # one id, one rule
    routed = client.post("/api/route", json={**PROBE, "client_id": "no!"}).get_json()["error"]
    checked = client.post("/api/self-check", json={**SELF_CHECK, "id": variant, "client_id": "no!"}).get_json()["error"]
    assert routed == checked and routed["param"] == "client_id"
    missing = [client.post(path, json={}).get_json()["error"]["message"] for path in ("/api/route", "/api/outcome")]
    assert missing == ["invalid request body at schema_version: 'schema_version' is a required property",
                       "invalid request body at target: 'target' is a required property (where the answer ran)"]


def test_what_a_schema_cannot_say_is_checked_after_it(tiny):
    """A catalog's ids come first (404), integers written as decimals and a configured limit after."""
    client, variant = tiny
    assert_error(client.post("/api/self-check", json={**SELF_CHECK, "id": "no-such-model", "client_id": 1}),
                 404, "id", "model_not_found")
    assert_error(client.post("/api/self-check", json={**SELF_CHECK, "id": variant, "token_ids": [1.0]}),
                 400, "token_ids")
    long = {"messages": [{"role": "assistant", "content": "a"}], "continue_final_message": True,
            "continue_token_ids": [1] * 5000}
    assert_error(client.post("/v1/chat/completions", json=long), 400, "continue_token_ids")

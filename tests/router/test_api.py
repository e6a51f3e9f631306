"""The server's HTTP surface through Flask's test client: with the real default model built in models/ where
a test needs its answers or files (`client`), over the tiny model's catalog where it needs only a catalog
(`tiny_client`: requests refused, catalog and client files served)."""
import itertools
import json
import time

import pytest

from router import create_app
from router.threads import available_cores
from tests.support.api import UPSTREAM_SECRET, assert_error
from tests.support.models import TINY, catalog_of, models_subset
from tests.support.probes import PROBE, SWIFTSHADER, measuring_probe


@pytest.fixture(scope="module")
def catalog(default_built):
    return json.loads((default_built / "manifest.json").read_text())




# --- /api/route ------------------------------------------------------------------------------------

def test_route_decides_and_explains(client):
    response = client.post("/api/route", json=PROBE)
    assert response.status_code == 200
    decision = response.get_json()
    assert decision["schema_version"] == 1
    assert decision["target"] == "cloud" and decision["reasons"][0]["code"] == "not_downloaded"
    assert decision["variant"] == "SmolLM2-135M-Instruct-q4f32_1" and decision["prefetch"] is True
    assert set(decision["predictions"]) == {"browser", "cloud"}


def test_route_decides_per_model_and_a_model_too_big_for_the_device_goes_to_the_server(default_built, tiny_models,
                                                                                     tmp_path):
    """Two models in one catalog (the 135M model and the tiny one); a device whose memory holds only the tiny
    one: the big one goes to the server and the reason names the memory, the tiny one does not."""
    from modelbuild.manifest import write_manifest
    models = tmp_path / "models"
    models.mkdir()
    for folder in (default_built / "SmolLM2-135M-Instruct-q4f32_1", tiny_models / "tiny-llama-q4f32_1"):
        (models / folder.name).symlink_to(folder)
    entries = {e["model"]: e for e in write_manifest(models)}
    wants = {name: e["requirements"]["estimated_gpu_memory_bytes"] * 2.0 / 1e9 for name, e in entries.items()}
    assert wants["tiny-llama"] < wants["SmolLM2-135M-Instruct"]
    client = create_app({"MODELS_DIR": str(models), "TESTING": True, "FLEET_DB": str(tmp_path / "f.sqlite3")}).test_client()
    memory = round((wants["tiny-llama"] + wants["SmolLM2-135M-Instruct"]) / 2, 3)
    decide = lambda model: client.post("/api/route", json={**PROBE, "model": model,  # noqa: E731
                                                           "device_memory_gb": memory}).get_json()
    big, tiny = decide("SmolLM2-135M-Instruct"), decide("tiny-llama")
    assert big["target"] == "cloud" and big["model"] == "SmolLM2-135M-Instruct" and big["variant"] is None
    assert [r for r in big["reasons"] if r["code"] == "low_memory"][0]["message"] == \
        f"the device reports {memory} GB of memory, SmolLM2-135M-Instruct-q4f32_1 wants " \
        f"{wants['SmolLM2-135M-Instruct']:.1f} GB"
    assert tiny["model"] == "tiny-llama" and tiny["variant"] == "tiny-llama-q4f32_1"
    assert "low_memory" not in {r["code"] for r in tiny["reasons"]}


@pytest.mark.parametrize("body,where", [
    ({"schema_version": 2, "webgpu": {"available": True}}, "schema_version"),
    ({"schema_version": 1}, "webgpu"),
    ({"schema_version": 1, "webgpu": {"available": "yes"}}, "webgpu.available"),
    ({"schema_version": 1, "webgpu": {"available": True}, "preference": "whatever"}, "preference"),
    ({"schema_version": 1, "webgpu": {"available": True}, "device_memory_gb": -1}, "device_memory_gb"),
    ({"schema_version": 1, "webgpu": {"available": True}, "surprise": 1}, "surprise"),
])
def test_route_rejects_malformed_reports(tiny_client, body, where):
    assert_error(tiny_client.post("/api/route", json=body), 400, param=where)


def test_route_rejects_non_json(tiny_client):
    assert_error(tiny_client.post("/api/route", data="{not json", content_type="application/json"), 400)
    assert_error(tiny_client.post("/api/route", json=[1, 2]), 400)


# --- /v1 -------------------------------------------------------------------------------------------

def test_models_lists_the_catalog(client):
    body = client.get("/v1/models").get_json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["SmolLM2-135M-Instruct"]


@pytest.mark.parametrize("change,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 10**6}, "max_tokens"),
    ({"max_tokens": "many"}, "max_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed_position": -1}, "seed_position"),
    ({"stop": 3}, "stop"),
    ({"n": 2}, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream": "yes"}, "stream"),
])
def test_chat_rejects_invalid_requests(tiny_client, change, param):
    body = {"model": TINY, "messages": [{"role": "user", "content": "hi"}], **change}
    assert_error(tiny_client.post("/v1/chat/completions", json=body), 400, param=param)


def test_chat_unknown_model_is_404(tiny_client):
    body = {"model": "gpt-99", "messages": [{"role": "user", "content": "hi"}]}
    assert_error(tiny_client.post("/v1/chat/completions", json=body), 404, param="model", code="model_not_found")


def test_chat_prompt_longer_than_context_is_400(tiny_client):
    body = {"messages": [{"role": "user", "content": "word " * 5000}], "max_tokens": 8}
    assert_error(tiny_client.post("/v1/chat/completions", json=body), 400, code="context_length_exceeded")


def test_huge_body_is_413(tiny_client):
    body = {"messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert_error(tiny_client.post("/v1/chat/completions", json=body), 413, code="request_too_large")


def test_chat_greedy_answer_matches_the_build_golden_tokens(client, catalog):
    check = next(m for m in catalog["models"] if m["quantization"] == "q4f32_1")["self_check"]
    body = {"model": "SmolLM2-135M-Instruct", "messages": check["messages"], "temperature": 0,
            "max_tokens": check["max_tokens"]}
    answer = client.post("/v1/chat/completions", json=body).get_json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "The capital of France is Paris."}
    assert answer["choices"][0]["finish_reason"] == "stop"
    golden = check["golden_token_ids"]  # ends with the stop token, which is not counted as completion
    assert answer["usage"] == {"prompt_tokens": len(check["prompt_token_ids"]), "completion_tokens": len(golden) - 1,
                               "total_tokens": len(check["prompt_token_ids"]) + len(golden) - 1}


def parse_sse(text):
    assert text.endswith("data: [DONE]\n\n")
    return [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


def test_chat_stream_is_openai_sse(client):
    body = {"messages": [{"role": "user", "content": "Say hello."}], "temperature": 0, "max_tokens": 5,
            "stream": True, "stream_options": {"include_usage": True}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = parse_sse(response.get_data(as_text=True))
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert finishes == ["length"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    plain = client.post("/v1/chat/completions", json={**body, "stream": False}).get_json()
    assert streamed == plain["choices"][0]["message"]["content"] and streamed


def test_stop_strings_end_the_answer_before_them(client):
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0,
            "max_tokens": 16, "stop": ["Paris"]}
    answer = client.post("/v1/chat/completions", json=body).get_json()["choices"][0]
    assert answer == {"index": 0, "message": {"role": "assistant", "content": "The capital of France is "},
                      "finish_reason": "stop", "logprobs": None}
    events = parse_sse(client.post("/v1/chat/completions", json={**body, "stream": True}).get_data(as_text=True))
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "The capital of France is "


def test_seed_makes_sampling_reproducible(client):
    body = {"messages": [{"role": "user", "content": "Name a fruit."}], "temperature": 1.0, "top_p": 0.9,
            "max_tokens": 6, "seed": 1234}
    first = client.post("/v1/chat/completions", json=body).get_json()["choices"][0]["message"]["content"]
    again = client.post("/v1/chat/completions", json=body).get_json()["choices"][0]["message"]["content"]
    assert first == again


def test_a_continued_answer_draws_where_the_first_stopped(client):
    """An answer cut after 5 tokens and continued (continue_final_message) with its seed at position 5 is the
    answer that was never cut: what a page asks for when the server takes over from a browser, or back."""
    question = [{"role": "user", "content": "Tell me about the sea."}]
    sampling = {"temperature": 0.9, "top_p": 0.95, "seed": 99}
    whole = ask(client, {"messages": question, "max_tokens": 14, **sampling})
    begun = ask(client, {"messages": question, "max_tokens": 5, **sampling})
    rest = ask(client, {"messages": question + [{"role": "assistant", "content": begun}], "continue_final_message": True,
                        "seed_position": 5, "max_tokens": 9, **sampling})
    assert begun + rest == whole
    assert rest != ask(client, {"messages": question + [{"role": "assistant", "content": begun}],
                                "continue_final_message": True, "max_tokens": 9, **sampling})  # position 0 draws others


def ask(client, body) -> str:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["choices"][0]["message"]["content"]


def test_an_answer_goes_on_from_its_own_tokens_not_its_text_tokenized_again(tiny_models, tmp_path):
    """The tiny random model draws "Cyber" + "save", which tokenizes again as "Cy" + "bers" + "ave": from the
    text, a continuation sees another prompt and draws other tokens; from the answer's own tokens (each
    streamed chunk carries them) it draws the uncut answer's."""
    app = create_app({"MODELS_DIR": str(tiny_models), "TESTING": True, "FLEET_DB": str(tmp_path / "fleet.db")})
    client = app.test_client()
    question = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
    sampling = {"temperature": 0.9, "top_p": 0.95, "seed": 2024}
    whole = ask(client, {"messages": question, "max_tokens": 12, **sampling})
    events = parse_sse(client.post("/v1/chat/completions", json={
        "messages": question, "max_tokens": 2, "stream": True, **sampling}).get_data(as_text=True))
    begun = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    ids = [i for e in events for i in e.get("seam", {}).get("token_ids", [])]
    assert len(ids) == 2 and begun == "Cybersave"
    go_on = {"messages": question + [{"role": "assistant", "content": begun}], "continue_final_message": True,
             "seed_position": 2, "max_tokens": 10, **sampling}
    assert begun + ask(client, {**go_on, "continue_token_ids": ids}) == whole
    assert begun + ask(client, go_on) != whole
    refused = client.post("/v1/chat/completions", json={**go_on, "continue_final_message": False, "continue_token_ids": ids})
    assert_error(refused, 400, param="continue_token_ids")


def test_a_stream_carries_every_token_id_even_when_the_answer_ends_inside_a_character(tiny_models, tmp_path):
    """The tiny random model draws byte tokens: an answer may end on a token that starts a UTF-8 character,
    whose chunk has no text but still its token id (a page hands those ids to the other path)."""
    app = create_app({"MODELS_DIR": str(tiny_models), "TESTING": True, "FLEET_DB": str(tmp_path / "fleet.db")})
    client, textless_tails = app.test_client(), 0
    for seed, max_tokens in itertools.product(range(200), range(3, 9)):  # about 1 in 150 ends so, here
        events = parse_sse(client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, "temperature": 1.0,
            "seed": seed, "stream": True, "stream_options": {"include_usage": True}}).get_data(as_text=True))
        carrying = [e for e in events if e.get("seam", {}).get("token_ids")]
        assert sum(len(e["seam"]["token_ids"]) for e in carrying) == events[-1]["usage"]["completion_tokens"], seed
        textless_tails += carrying[-1]["choices"][0]["delta"]["content"] == ""
    assert textless_tails, "no answer ended inside a character: the case this test is for never ran"


def test_a_chat_templates_refusal_is_a_400(tiny_models, tmp_path):
    """A template's raise_exception (here: roles must alternate) is the request's fault, not the server's."""
    variant = catalog_of(tiny_models)["models"][0]["id"]
    models = models_subset(tiny_models, tmp_path / "models", variant)
    config_file = models / variant / "mlc-chat-config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = ("{% for m in messages %}{% if (m.role == 'user') != loop.index0 is even %}"
                               "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
                               "{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:")
    config_file.write_text(json.dumps(config))
    app = create_app({"MODELS_DIR": str(models), "TESTING": True, "FLEET_DB": str(tmp_path / "fleet.db")})
    body = {"messages": [{"role": "assistant", "content": "I go first"}], "max_tokens": 2}
    response = app.test_client().post("/v1/chat/completions", json=body)
    assert_error(response, 400, param="messages", code="chat_template_refused")  # not "context_length_exceeded"
    assert response.get_json()["error"]["message"] == ("the chat template refused the messages: roles must alternate "
                                                        "user/assistant: send the conversation in an order this model takes")
    assert app.test_client().post("/v1/chat/completions", json={**body, "messages": [
        {"role": "user", "content": "hi"}]}).status_code == 200


def test_a_variant_whose_files_are_broken_is_a_503_that_says_so_until_rebuilt(tiny_models, tmp_path, caplog):
    """A valid catalog over a corrupted shard, then over a missing folder: each chat is a 503 that names the
    variant and what to do (the server's paths only in its log); restored files are served, no restart."""
    import shutil
    entry = next(m for m in catalog_of(tiny_models)["models"] if m["quantization"] == "q4f32_1")
    shard = next(f for f in (tiny_models / entry["id"]).iterdir() if f.name.startswith("params_shard"))
    models = models_subset(tiny_models, tmp_path / "models", entry["id"], corrupt=shard.name)
    app = create_app({"MODELS_DIR": str(models), "TESTING": True, "FLEET_DB": str(tmp_path / "fleet.db")})
    client = app.test_client()
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with caplog.at_level("ERROR", logger="seam"):
        corrupted = client.post("/v1/chat/completions", json=body)
        shutil.rmtree(models / entry["id"])
        missing = client.post("/v1/chat/completions", json=body)
    for response, says in ((corrupted, f"{shard.name} does not match its recorded size and sha256"),
                           (missing, "its files are missing or unreadable")):
        assert_error(response, 503, param="model", code="model_unavailable")
        message = response.get_json()["error"]["message"]
        assert entry["id"] in message and says in message and "make build-model" in message
        assert str(tmp_path) not in response.get_data(as_text=True)
    assert str(models / entry["id"]) in caplog.text
    shutil.copytree(tiny_models / entry["id"], models / entry["id"])
    assert client.post("/v1/chat/completions", json=body).status_code == 200


# --- artifacts -------------------------------------------------------------------------------------

def test_catalog_is_never_cached(tiny_client):
    response = tiny_client.get("/models/manifest.json")
    assert response.status_code == 200 and "no-cache" in response.headers["Cache-Control"]


def test_model_files_are_immutable_with_etag_and_ranges(client, catalog, default_built):
    entry = catalog["models"][0]
    url = f"/models/{entry['id']}/{entry['version']}/{entry['files'][entry['kernels']['software']['file']]}"
    full = client.get(url)
    assert full.status_code == 200 and full.mimetype == "application/wasm"
    assert "immutable" in full.headers["Cache-Control"] and "max-age=31536000" in full.headers["Cache-Control"]
    assert client.get(url, headers={"If-None-Match": full.headers["ETag"]}).status_code == 304
    part = client.get(f"/models/{entry['id']}/{entry['version']}/params_shard_0.bin", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.data == (default_built / entry["path"] / "params_shard_0.bin").read_bytes()[100:200]


@pytest.mark.parametrize("path", [
    "/models/{id}/0000000000000000/mlc-chat-config.json",    # not the current version
    "/models/{id}/{version}/../../../pyproject.toml",        # escape attempts
    "/models/{id}/{version}/%2e%2e/%2e%2e/pyproject.toml",
    "/models/{id}/{version}/{id}-cpu.so",                    # server-side files
    "/models/nope/{version}/tokenizer.json",
])
def test_no_path_escapes_or_leaks(tiny_client, tiny_catalog, path):
    entry = tiny_catalog["models"][0]
    response = tiny_client.get(path.format(id=entry["id"], version=entry["version"]))
    assert response.status_code == 404


# --- page and operations ----------------------------------------------------------------------------

def test_the_client_config_names_the_api_version_urls_and_no_secret(tiny_client):
    response = tiny_client.get("/api/client")
    config = response.get_json()
    assert config["api_version"] == 1 and response.cache_control.no_store
    assert config["endpoints"]["route"] == "/api/route" and config["client_url"] == "/client/index.js"
    entry = config["models"][0]
    assert entry["base_url"] == f"/models/{entry['id']}/{entry['version']}/"
    assert UPSTREAM_SECRET not in response.get_data(as_text=True)
    assert UPSTREAM_SECRET not in tiny_client.get("/").get_data(as_text=True)


def test_the_client_and_its_libraries_are_served_and_nothing_else(tiny_client):
    entry = tiny_client.get("/client/index.js")
    assert entry.status_code == 200 and entry.mimetype == "text/javascript" and entry.cache_control.no_cache
    assert "export { Seam }" in entry.get_data(as_text=True)
    assert tiny_client.get("/client/lib/engine/worker.js").status_code == 200
    for escape in ("/client/../router/config.py", "/client/%2e%2e/%2e%2e/pyproject.toml", "/client/lib/../../README.md"):
        assert tiny_client.get(escape).status_code == 404, escape
    vendor = tiny_client.get("/api/client").get_json()["engine"]["vendor"]
    tvmjs = tiny_client.get(vendor["tvmjs"])
    assert tvmjs.status_code == 200 and tvmjs.cache_control.immutable and tvmjs.cache_control.max_age == 365 * 24 * 3600
    assert tiny_client.get(vendor["tvmjs"].replace("/vendor/", "/vendor/0.0.0-").rsplit("/", 1)[0] + "/x").status_code == 404
    assert tiny_client.get(vendor["tvmjs"].replace("tvmjs.js", "../../package.json")).status_code == 404


def test_health_and_metrics(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "models": 2, "cloud": "embedded",
                                                 "engine_threads": available_cores()[0]}
    client.post("/api/route", json=PROBE)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'seam_route_decisions_total{reason="not_downloaded",target="cloud"}' in text
    assert "seam_request_seconds_bucket" in text


# --- the hybrid seam's server side ------------------------------------------------------------------

def test_continue_final_message_goes_on_with_the_shown_text(client):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    body = {"messages": question, "temperature": 0, "max_tokens": 12}
    whole = client.post("/v1/chat/completions", json=body).get_json()["choices"][0]["message"]["content"]
    shown = " ".join(whole.split(" ")[:2])  # what a browser showed before its GPU failed
    assert 0 < len(shown) < len(whole)
    rest = client.post("/v1/chat/completions", json={
        **body, "messages": question + [{"role": "assistant", "content": shown}], "continue_final_message": True,
    }).get_json()["choices"][0]["message"]["content"]
    assert shown + rest == whole


def test_continue_final_message_needs_an_assistant_message_last(tiny_client):
    body = {"messages": [{"role": "user", "content": "Hi"}], "continue_final_message": True}
    assert_error(tiny_client.post("/v1/chat/completions", json=body), 400, "continue_final_message")
    body = {"messages": [{"role": "user", "content": "Hi"}], "continue_final_message": "yes"}
    assert_error(tiny_client.post("/v1/chat/completions", json=body), 400, "continue_final_message")


def test_catalog_endpoint_gives_the_page_its_models(tiny_client, tiny_catalog):
    models = tiny_client.get("/api/catalog").get_json()["models"]
    assert [m["id"] for m in models] == [m["id"] for m in tiny_catalog["models"]]
    assert all(m["base_url"] == f"/models/{m['id']}/{m['version']}/" and "cpu_library" in m["files"] for m in models)


def test_fleet_counts_each_clients_versions_and_self_checks(app, catalog):
    client = app.test_client()
    entry = catalog["models"][1]
    held = [{"id": entry["id"], "version": entry["version"]}]
    for client_id in ("client-aaaaaaaa", "client-bbbbbbbb"):
        assert client.post("/api/route", json={**PROBE, "client_id": client_id, "cached_models": held}).status_code == 200
    # A client reports its whole list each time: what it dropped stops counting.
    old = [{"id": entry["id"], "version": "0123456789abcdef"}]
    client.post("/api/route", json={**PROBE, "client_id": "client-cccccccc", "cached_models": old})
    client.post("/api/route", json={**PROBE, "client_id": "client-cccccccc", "cached_models": held})
    client.post("/api/route", json={**PROBE, "client_id": "client-dddddddd", "cached_models": old})
    fleet = client.get("/api/fleet").get_json()
    assert {"id": entry["id"], "version": entry["version"], "clients": 3} in fleet["cached"]
    # A version the catalog does not know is kept as "other", never as the client's string.
    assert {"id": entry["id"], "version": "other", "clients": 1} in fleet["cached"]
    assert fleet["catalog"][entry["id"]] == entry["version"]

    # Self-checks count clients: a client's latest result per version and adapter replaces its earlier one.
    report = {"id": entry["id"], "version": entry["version"], "adapter": "SwiftShader", "passed": False,
              "token_ids": [1, 2, 3], "client_id": "client-aaaaaaaa"}
    def counted():  # the metric's counts are process-wide: compared before and after
        text = client.get("/metrics").get_data(as_text=True)
        lines = {result: f'seam_self_checks_total{{model="{entry["id"]}",result="{result}",version="{entry["version"]}"}} '
                 for result in ("passed", "failed")}
        return {r: float(text.split(line)[1].split()[0]) if line in text else 0.0 for r, line in lines.items()}
    before = counted()
    a, b = {"REMOTE_ADDR": "192.0.2.10"}, {"REMOTE_ADDR": "192.0.2.11"}
    for _ in range(3):
        assert client.post("/api/self-check", json=report, environ_base=a).get_json() == {"recorded": True}
    client.post("/api/self-check", json={**report, "client_id": "client-bbbbbbbb", "passed": True}, environ_base=b)
    checks = client.get("/api/fleet").get_json()["self_checks"]
    assert {"id": entry["id"], "version": entry["version"], "adapter": "SwiftShader", "passed": 1, "failed": 1} in checks
    client.post("/api/self-check", json={**report, "passed": True}, environ_base=a)
    checks = client.get("/api/fleet").get_json()["self_checks"]
    assert {"id": entry["id"], "version": entry["version"], "adapter": "SwiftShader", "passed": 2, "failed": 0} in checks
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'seam_client_model_versions{{model="{entry["id"]}",version="{entry["version"]}"}} 3.0' in metrics
    after = counted()  # a's failure once (not three times), b's pass, a's pass when its result changed
    assert {r: after[r] - before[r] for r in after} == {"passed": 2, "failed": 1}


@pytest.mark.parametrize("body,status,param", [
    ({"id": "no-such-model", "version": "x", "passed": True}, 404, "id"),
    ({"id": "tiny-llama-q4f32_1", "version": "x"}, 400, "passed"),
    ({"id": "tiny-llama-q4f32_1", "version": "x", "passed": True, "client_id": "client-aaaaaaaa",
      "token_ids": ["a"]}, 400, "token_ids[0]"),
    ({"id": "tiny-llama-q4f32_1", "version": "x", "passed": True}, 400, "client_id"),
    ({"id": "tiny-llama-q4f32_1", "version": "x", "passed": True, "client_id": "client-aaaaaaaa",
      "token_ids": [10 ** 300]}, 400, "token_ids[0]"),
    ({"id": "tiny-llama-q4f32_1", "version": "x", "passed": True, "client_id": "client-aaaaaaaa",
      "token_ids": [-1]}, 400, "token_ids[0]"),
    ({"id": "tiny-llama-q4f32_1", "version": "x", "passed": True, "client_id": "client-aaaaaaaa",
      "adapter": "a" * 201}, 400, "adapter"),
])
def test_self_check_reports_are_validated(tiny_client, body, status, param):
    assert_error(tiny_client.post("/api/self-check", json=body), status, param)


def test_the_catalog_follows_a_rebuild(tmp_path, tiny_catalog):
    (tmp_path / "manifest.json").write_text(json.dumps(tiny_catalog))
    app = create_app({"MODELS_DIR": str(tmp_path), "TESTING": True, "FLEET_DB": str(tmp_path / "fleet.db")})
    client = app.test_client()
    entry = tiny_catalog["models"][0]
    assert client.get("/api/catalog").get_json()["models"][0]["version"] == entry["version"]
    rebuilt = {**tiny_catalog, "models": [{**entry, "version": "fedcba9876543210"}]}
    (tmp_path / ".manifest.tmp").write_text(json.dumps(rebuilt))
    (tmp_path / ".manifest.tmp").replace(tmp_path / "manifest.json")  # as the build writes it
    assert client.get("/api/catalog").get_json()["models"][0]["version"] == "fedcba9876543210"
    assert client.get(f"/models/{entry['id']}/{entry['version']}/tokenizer.json").status_code == 404


# --- routing from measurements ----------------------------------------------------------------------

def test_the_fleet_calibrates_devices_that_have_not_measured_and_fake_clients_cannot_skew_it(app, catalog):
    client = app.test_client()
    entry = catalog["models"][1]
    newcomer = {**PROBE, "webgpu": SWIFTSHADER, "benchmark": {"bandwidth_gbps": 2.0}}
    predicted = client.post("/api/route", json=newcomer).get_json()["predictions"]["browser"]
    assert predicted["source"] == "predicted"
    fixed = predicted["tokens_per_s"]  # the policy's prediction from the bandwidth probe alone

    def report(client_id, decode, address):
        assert client.post("/api/route", json=measuring_probe(entry, client_id, decode),
                           environ_base={"REMOTE_ADDR": address}).status_code == 200

    def newcomers_prediction():
        return client.post("/api/route", json=newcomer).get_json()["predictions"]["browser"]

    honest = [0.6 * fixed, 0.7 * fixed, 0.8 * fixed]  # decode tokens/s that three SwiftShader clients measured
    for i, decode in enumerate(honest):  # each from its own address: one address's ids count once
        report(f"client-honest-{i}", decode, f"192.0.2.{i + 1}")
    calibrated = newcomers_prediction()
    assert calibrated["source"] == "calibrated"
    assert min(honest) <= calibrated["tokens_per_s"] <= max(honest)
    # One client claiming a thousand times the speed moves the median at most to a neighbouring honest value.
    report("client-liar-000", 1000 * fixed, "198.51.100.1")
    assert min(honest) <= newcomers_prediction()["tokens_per_s"] <= max(honest)
    # 50 fake clients from 50 addresses, all claiming almost nothing, own the median, but not past the
    # policy's band: the newcomer's prediction stays at 0.5x the fixed one, and at most 2x from the other side.
    band = app.extensions["seam"]["policy"]["calibration"]
    for i in range(50):
        report(f"client-fake-{i:03d}", fixed / 1000, f"203.0.113.{i + 1}")
    skewed = newcomers_prediction()["tokens_per_s"]
    assert skewed == pytest.approx(band["min_ratio"] * fixed, rel=1e-3)
    for i in range(50, 100):  # and from the other side
        report(f"client-fake-{i:03d}", 1000 * fixed, f"203.0.113.{i + 1}")
    assert newcomers_prediction()["tokens_per_s"] <= band["max_ratio"] * fixed * 1.001
    view = client.get("/api/fleet").get_json()["calibration"]
    assert [(row["adapter_class"], row["sources"]) for row in view] == [("google/swiftshader/fallback", 104)]


def test_a_device_that_measured_is_predicted_by_its_measurement(client, catalog):
    entry = catalog["models"][1]
    decision = client.post("/api/route", json=measuring_probe(entry, "client-measured", 0.4)).get_json()
    assert decision["predictions"]["browser"]["tokens_per_s"] == 0.4
    assert (decision["target"], decision["reasons"][0]["code"]) == ("cloud", "browser_too_slow")


def test_routing_is_cheap(client, catalog):
    entry = catalog["models"][1]
    times = []
    for i in range(100):
        started = time.perf_counter()
        assert client.post("/api/route", json=measuring_probe(entry, f"client-{i % 10:08d}", 0.4)).status_code == 200
        times.append(time.perf_counter() - started)
    p95 = sorted(times)[94]
    print(f"routing p95 {p95 * 1000:.1f} ms")
    assert p95 < 0.020


def bucket(client, le: str, measure: str) -> float:
    """One bucket of seam_prediction_ratio for the browser (counts are process-wide: compare before/after)."""
    line = f'seam_prediction_ratio_bucket{{le="{le}",measure="{measure}",target="browser"}} '
    text = client.get("/metrics").get_data(as_text=True)
    return float(text.split(line)[1].split()[0]) if line in text else 0.0


def test_outcomes_feed_the_prediction_histograms(tiny_client):
    report = {"target": "browser", "predicted": {"ttft_s": 2.0, "tokens_per_s": 4.0},
              "actual": {"ttft_s": 3.0, "tokens_per_s": 1.0}}
    buckets = [("0.25", "tokens_per_s"), ("1.5", "ttft_s"), ("1.25", "ttft_s")]
    before = [bucket(tiny_client, *b) for b in buckets]
    assert tiny_client.post("/api/outcome", json=report).get_json() == {"recorded": True}
    after = [bucket(tiny_client, *b) for b in buckets]
    # 1/4 = 0.25 falls in the 0.25 bucket; 3/2 = 1.5 in the 1.5 bucket, not the 1.25 one.
    assert [a - b for a, b in zip(after, before)] == [1, 1, 0]
    bad = {**report, "actual": {"ttft_s": -1}}
    assert_error(tiny_client.post("/api/outcome", json=bad), 400, "actual.ttft_s")
    assert_error(tiny_client.post("/api/outcome", json={**report, "target": "moon"}), 400, "target")


def test_a_broken_catalog_is_a_503_with_the_reason_until_it_is_rebuilt(tmp_path, tiny_catalog, caplog):
    (tmp_path / "manifest.json").write_text(json.dumps({**tiny_catalog, "models": [{"id": "half-written"}]}))
    with caplog.at_level("ERROR", logger="seam.catalog"):
        app = create_app({"MODELS_DIR": str(tmp_path), "TESTING": True, "FLEET_DB": str(tmp_path / "fleet.db")})
    assert "does not follow models/manifest.schema.json at models/0" in caplog.text  # said at startup
    client = app.test_client()
    for response in (client.get("/api/catalog"), client.get("/healthz"),
                     client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})):
        assert_error(response, 503, code="catalog_invalid")
        assert "make build-model" in response.get_json()["error"]["message"]
        assert str(tmp_path) not in response.get_data(as_text=True)  # the server's paths stay in its log
    assert str(tmp_path) in caplog.text
    assert client.get("/metrics").status_code == 200
    (tmp_path / "manifest.json").write_text("{not json")
    assert "not readable JSON" in client.get("/api/catalog").get_json()["error"]["message"]
    (tmp_path / "manifest.json").write_text(json.dumps(tiny_catalog))  # rebuilt: served again, no restart
    assert client.get("/api/catalog").status_code == 200

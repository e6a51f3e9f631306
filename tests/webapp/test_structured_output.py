"""Structured output in the browser engine (web-xgrammar in the Web Worker, WebGPU on SwiftShader) and on
the chat page. At temperature 0 the browser's answer must be the server's, token for token; sampled
answers must validate; bad schemas are typed errors that name the offending part.

The mechanics run on the tiny random Llama, with a schema whose every answer is short (an array of at
most three enum values), so even a random model's sampled answer ends well within max_tokens; greedy
agreement on the real model is the fidelity check.
"""
import json

import jsonschema
from playwright.sync_api import expect

from tests.support.api import greedy_request, server_reply
from tests.support.models import REAL, TINY
from tests.support.pages import ChatPage, run_in_the_engine
from tests.support.structured import BAD_SCHEMAS, CASES, response_format

BOUNDED = CASES[1]  # array-of-enums

SLOW = {"enum": [f"{i}" + "a" * 990 for i in range(15)]}  # within the limits; compiles for a second or more


def test_the_engine_refuses_bad_schemas_then_answers_within_the_schema(page, tiny_server, expected_console_errors):
    requests_ = [{"messages": [{"role": "user", "content": "hi"}], "response_format": fmt} for fmt, _ in BAD_SCHEMAS]
    requests_ += [greedy_request(BOUNDED, TINY),
                  {**greedy_request(BOUNDED, TINY), "temperature": 1.0, "top_p": 1.0, "seed": 11}]
    results = run_in_the_engine(page, tiny_server.url, f"{TINY}-q4f32_1", requests_, expected_console_errors)
    for (_, part), result in zip(BAD_SCHEMAS, results):
        assert result.get("kind") == "InvalidSchemaError" and part in result["message"], result
    browser_greedy, browser_sampled = results[len(BAD_SCHEMAS):]
    server = server_reply(tiny_server.url, requests_[len(BAD_SCHEMAS)])
    assert browser_greedy["content"] == server["choices"][0]["message"]["content"], \
        "the browser's grammar let through other tokens than the server's (same greedy model, same schema)"
    assert browser_greedy["usage"] == server["usage"] and browser_greedy["finish"] == "stop"
    jsonschema.validate(json.loads(browser_greedy["content"]), BOUNDED["schema"])
    assert browser_sampled["finish"] == "stop", browser_sampled
    jsonschema.validate(json.loads(browser_sampled["content"]), BOUNDED["schema"])


def test_a_compile_past_the_timeout_restarts_the_engine_and_is_a_schema_error(page, app_server, tiny_models,
                                                                              expected_console_errors):
    """web-xgrammar's compile cannot be interrupted: past the server's compile timeout the page replaces the
    worker, and the engine answers the next request after reloading the model."""
    server = app_server(tiny_models, SCHEMA_TIMEOUT_S=0.5)
    slow = {"messages": [{"role": "user", "content": "hi"}], "response_format": response_format(SLOW)}
    plain = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 4}
    timed_out, after = run_in_the_engine(page, server.url, f"{TINY}-q4f32_1", [slow, plain], expected_console_errors)
    assert timed_out["kind"] == "InvalidSchemaError" and "took longer than 0.5 s" in timed_out["message"]
    assert after["content"] == server_reply(server.url, {**plain, "model": TINY})["choices"][0]["message"]["content"]


def test_the_browsers_greedy_structured_answer_is_the_servers(page, live_app, default_built, expected_console_errors):
    """Fidelity: the real model, grammar-constrained in the worker, gives the server's very tokens."""
    request = greedy_request(BOUNDED, REAL)
    browser = run_in_the_engine(page, live_app, f"{REAL}-q4f32_1", [request], expected_console_errors)[0]
    server = server_reply(live_app, request)
    assert browser["content"] == server["choices"][0]["message"]["content"]
    assert browser["usage"] == server["usage"] and browser["finish"] == "stop"
    jsonschema.validate(json.loads(browser["content"]), BOUNDED["schema"])


def test_the_page_offers_a_schema_and_refuses_a_broken_one(page, tiny_server):
    case = BOUNDED
    chat = ChatPage(page, tiny_server.url).open(preference="cloud_only", temperature=0, max_tokens=case["max_tokens"],
                                                system=case["messages"][0]["content"])
    page.locator("#settings summary").click()
    page.locator("#response-format").select_option("json_schema")
    page.locator("#json-schema").fill(json.dumps(case["schema"]))
    shown = chat.ask(case["messages"][1]["content"])
    assert (shown["where"], shown["state"], shown["finish_reason"]) == ("cloud", "done", "stop")
    expected = server_reply(tiny_server.url, greedy_request(case, TINY))
    assert shown["text"] == expected["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(shown["text"]), case["schema"])
    page.locator("#json-schema").fill("{not json")
    count = chat.answers.count()
    chat.prompt.fill("Again?")
    chat.prompt.press("Enter")
    expect(chat.notice).to_contain_text("the JSON schema in Settings is not valid JSON")
    assert chat.answers.count() == count  # nothing was sent


def test_request_errors_in_the_browser_are_the_users_not_the_gpus(page, tiny_server, tiny_models, self_check_passed):
    """A request error (a schema the grammar cannot enforce, a bad seed) reaches the user as that error; it is
    not handed to the server as a GPU failure, and the engine stays loaded for the next answer."""
    self_check_passed(tiny_models)
    chat = ChatPage(page, tiny_server.url).open(temperature=0, max_tokens=4)
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)  # the server could take over
    page.locator("#settings summary").click()
    page.locator("#response-format").select_option("json_schema")
    page.locator("#json-schema").fill(json.dumps({"type": "array", "items": {"type": "string"}, "uniqueItems": True}))
    page.locator("#settings summary").click()
    refused = chat.ask("hi")
    assert (refused["state"], refused["error_kind"]) == ("error", "InvalidSchemaError"), refused
    assert "uniqueItems" in refused["stats"]
    expect(chat.notice).not_to_contain_text("GPU failed")
    assert page.evaluate("window.seam.status().engine?.state === 'ready'"), "a schema error unloaded the browser engine"
    assert page.evaluate("window.seam.status().report.unreliable_models") == []
    page.locator("#settings summary").click()
    page.locator("#response-format").select_option("text")
    page.locator("#settings summary").click()
    assert chat.ask("hi")["where"] == "browser"
    # A seed out of range: the same words as the server's 400, and the engine stays.
    chat.settings(seed=2**32)
    refused = chat.ask("hi")
    assert (refused["state"], refused["error_kind"]) == ("error", "InvalidRequestError"), refused
    assert "seed must be an integer from 0 to 4294967295" in refused["stats"]
    expect(chat.notice).not_to_contain_text("GPU failed")
    assert page.evaluate("window.seam.status().engine?.state === 'ready'") and page.evaluate("window.seam.status().report.unreliable_models") == []

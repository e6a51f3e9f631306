"""Structured output in the browser engine (web-xgrammar in the Web Worker, WebGPU on SwiftShader) and on
the chat page. At temperature 0 the browser's answer must be the server's, token for token; sampled
answers must validate; bad schemas are typed errors that name the offending part.
"""
import json

import jsonschema
import pytest
import requests
from playwright.sync_api import expect

from tests.structured import CASES, response_format
from tests.webapp.chat_page import ChatPage
from tests.webapp.helpers import MODEL

pytestmark = pytest.mark.browser
VARIANT = f"{MODEL}-q4f32_1"

RUN = """async ({ modelId, requests }) => {
  const engine = window.seam.browserEngine();
  await engine.load(window.seam.config.models.find((m) => m.id === modelId));
  const results = [];
  for (const request of requests) {
    try {
      const r = await engine.chat.completions.create(request);
      results.push({ content: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage });
    } catch (error) {
      results.push({ kind: error.kind, message: error.message });
    }
  }
  return results;
}"""

BAD = [  # (response_format, what its error must name)
    (response_format({"type": "object", "properties": {"age": {"type": "whole number"}}}), "properties.age.type"),
    (response_format({"type": "array", "items": {"type": "string"}, "uniqueItems": True}), "uniqueItems"),
    (response_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}), "properties.a.$ref"),
    # Valid JSON Schema that xgrammar cannot compile: web-xgrammar aborts its wasm instance on it, and the
    # engine must still answer the next request.
    (response_format({"type": "string", "pattern": "\\bword"}), "Word boundary is not supported"),
]


def server_answer(base_url: str, request: dict) -> dict:
    response = requests.post(base_url + "v1/chat/completions", json={"model": MODEL, **request}, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def test_browser_structured_answers_equal_the_servers_and_validate(page, live_app, expected_console_errors):
    greedy, sampled = CASES[1], CASES[2]
    requests_ = [{"messages": [{"role": "user", "content": "hi"}], "response_format": fmt} for fmt, _ in BAD]
    requests_ += [{"messages": greedy["messages"], "response_format": response_format(greedy["schema"]),
                   "temperature": 0, "max_tokens": greedy["max_tokens"]},
                  {"messages": sampled["messages"], "response_format": response_format(sampled["schema"]),
                   "temperature": 1.0, "top_p": 1.0, "seed": 11, "max_tokens": sampled["max_tokens"]}]
    # The page would route, prefetch and self-check by itself; here the test alone drives the engine.
    expected_console_errors.append("net::ERR_FAILED")
    page.route("**/api/route", lambda route: route.abort())
    page.goto(live_app)
    results = page.evaluate(RUN, {"modelId": VARIANT, "requests": requests_})
    print(json.dumps(results, indent=1))  # shown when the test fails
    for (_, part), result in zip(BAD, results):
        assert result.get("kind") == "InvalidSchemaError" and part in result["message"], result
    browser_greedy, browser_sampled = results[len(BAD):]
    server = server_answer(live_app, requests_[len(BAD)])
    assert browser_greedy["content"] == server["choices"][0]["message"]["content"]
    assert browser_greedy["usage"] == server["usage"] and browser_greedy["finish"] == "stop"
    jsonschema.validate(json.loads(browser_greedy["content"]), greedy["schema"])
    assert browser_sampled["finish"] == "stop", browser_sampled
    jsonschema.validate(json.loads(browser_sampled["content"]), sampled["schema"])


def test_the_page_offers_a_schema_and_refuses_a_broken_one(page, live_app):
    case = CASES[1]
    chat = ChatPage(page, live_app).open(preference="cloud_only", temperature=0, max_tokens=case["max_tokens"],
                                         system=case["messages"][0]["content"])
    page.locator("#settings summary").click()
    page.locator("#response-format").select_option("json_schema")
    page.locator("#json-schema").fill(json.dumps(case["schema"]))
    shown = chat.ask(case["messages"][1]["content"])
    assert (shown["where"], shown["state"], shown["finish_reason"]) == ("cloud", "done", "stop")
    expected = server_answer(live_app, {"messages": case["messages"], "temperature": 0, "max_tokens": case["max_tokens"],
                                        "response_format": response_format(case["schema"])})
    assert shown["text"] == expected["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(shown["text"]), case["schema"])
    page.locator("#json-schema").fill("{not json")
    count = chat.answers.count()
    chat.prompt.fill("Again?")
    chat.prompt.press("Enter")
    expect(chat.notice).to_contain_text("the JSON schema in Settings is not valid JSON")
    assert chat.answers.count() == count  # nothing was sent

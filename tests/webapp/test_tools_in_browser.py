"""Tool calling in the browser engine (web-xgrammar's structural tags in the worker, WebGPU on SwiftShader),
against the server's: the same refusals, the same calls at temperature 0, calls that validate when sampled,
a call handed over to the server in its middle, and the OpenAI tool loop through the browser engine.

The tiny random Llama (SmolLM2's template, which takes no tools: the generic format) for the mechanics; the
real model for fidelity (its calls are meaningful: get_weather for Paris).
"""
import json

import jsonschema
from playwright.sync_api import expect

from tests.support.api import server_reply
from tests.support.models import REAL, TINY
from tests.support.pages import ChatPage, run_in_the_engine
from tests.support.tool_families import ASK, TIME, WEATHER, family_folders

BAD = [  # a request's tool fields, and words of the refusal (the same words as the server's: test_tools_agreement.py)
    ({"tools": [WEATHER, WEATHER]}, "also the name of tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"not": {"type": "string"}}}}}}]}, 'tool f: tools[0].function.parameters.properties.a.not: the keyword "not"'),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "not in tools"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "cannot be asked together"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "21"}]}, "answers no call"),
]
CHOICES = [{"tool_choice": "required", "parallel_tool_calls": False},
           {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
           {"tool_choice": "required"}]


def calls(result: dict) -> list[tuple[str, dict]]:
    """Each call's name and arguments, validated against its tool's parameters (ids are random)."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    out = []
    for call in result.get("tool_calls") or []:
        assert call["id"].startswith("call_") and call["type"] == "function", call
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, schemas[call["function"]["name"]])
        out.append((call["function"]["name"], arguments))
    return out


def server_calls(url: str, request: dict) -> tuple[dict, list]:
    reply = server_reply(url, request)
    message = reply["choices"][0]["message"]
    return reply, calls({"tool_calls": message.get("tool_calls")})


def test_the_browser_refuses_bad_tools_and_calls_as_the_server_does(page, tiny_server, expected_console_errors):
    base = {"model": TINY, "messages": ASK, "tools": [WEATHER, TIME], "max_tokens": 120}
    greedy = [{**base, **choice, "temperature": 0} for choice in CHOICES]
    sampled = [{**base, **choice, "temperature": 1.0, "seed": seed} for seed in (1, 2) for choice in CHOICES[:2]]
    results = run_in_the_engine(page, tiny_server.url, f"{TINY}-q4f32_1",
                                [{**base, **fields} for fields, _ in BAD] + greedy + sampled, expected_console_errors)
    for (fields, words), result in zip(BAD, results):
        assert result.get("kind") == "InvalidRequestError" and words in result["message"], (fields, result)
    for request, result in zip(greedy, results[len(BAD):]):
        reply, theirs = server_calls(tiny_server.url, request)
        assert result["target"] == "browser" and result["finish"] == "tool_calls" == reply["choices"][0]["finish_reason"]
        assert calls(result) == theirs, "the browser's grammar let other tokens through than the server's"
        assert result["usage"] == reply["usage"] and result["content"] is None
    named, several = results[len(BAD) + 1], results[len(BAD) + 2]
    assert [name for name, _ in calls(named)] == ["get_time"] and len(calls(several)) >= 1
    for result in results[len(BAD) + len(greedy):]:
        assert result["finish"] == "tool_calls" and len(calls(result)) == 1, result


def test_each_familys_format_calls_in_the_browser_as_on_the_server(page, app_server, tiny_models, tmp_path_factory,
                                                                   expected_console_errors):
    """The tiny model under each family's tool template (hermes, mistral, llama3_json): the catalog's format
    reaches the browser engine, whose greedy calls are the server's and whose sampled calls validate."""
    for fmt, folder in family_folders(tiny_models, tmp_path_factory).items():
        if fmt == "generic":
            continue  # test_the_browser_refuses_bad_tools_and_calls_as_the_server_does
        server = app_server(folder)
        base = {"model": TINY, "messages": ASK, "tools": [WEATHER, TIME], "max_tokens": 120, **CHOICES[2]}
        greedy, sampled = {**base, "temperature": 0}, {**base, "temperature": 1.0, "seed": 5}
        results = run_in_the_engine(page, server.url, f"{TINY}-q4f32_1", [greedy, sampled], expected_console_errors)
        reply, theirs = server_calls(server.url, greedy)
        assert calls(results[0]) == theirs and theirs, (fmt, results[0], theirs)
        assert results[0]["usage"] == reply["usage"], fmt
        assert results[1]["finish"] == "tool_calls" and calls(results[1]), (fmt, results[1])


def test_a_call_cut_by_a_lost_gpu_goes_on_on_the_server(page, tiny_models, app_server, self_check_passed,
                                                         expected_console_errors):
    """The GPU is lost a few tokens into a call: the server goes on with that call from the text given so
    far, and the calls the page gets are the server's uncut greedy answer's."""
    server = app_server(tiny_models, test_hooks=True)
    self_check_passed(tiny_models)
    expected_console_errors.append("Device lost, calling Instance.dispose()")
    request = {"messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False,
               "temperature": 0, "max_tokens": 60}
    chat = ChatPage(page, server.url + "?kernels=software").open()
    chat.wait_until_loaded()
    expect(chat.route).to_have_attribute("data-target", "browser", timeout=60_000)
    page.evaluate("window.seam.test.loseDeviceAfter(12)")
    shown = page.evaluate("""async (request) => {
        const r = await window.seam.chat.completions.create(request);
        return { tool_calls: r.choices[0].message.tool_calls, finish: r.choices[0].finish_reason, seam: r.seam };
    }""", request)
    print(json.dumps(shown, indent=1))
    assert shown["seam"]["handover"]["from"] == "browser" and shown["seam"]["handover"]["at_token"] == 12
    assert shown["seam"]["target"] == "cloud"
    reply, theirs = server_calls(server.url, {**request, "model": TINY})
    assert calls(shown) == theirs and shown["finish"] == "tool_calls", "the call was not continued where it was cut"
    assert len(shown["tool_calls"]) == 1  # one call, opened in the browser and ended on the server


def test_the_tool_loop_through_the_browser_engine_is_the_servers(page, live_app, default_built,
                                                                 expected_console_errors):
    """Fidelity, on the real model in Chromium (its CPU build): the call (greedy) and, after the tool's
    result, the final answer are the server's, word for word."""
    ask = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
    first = {"model": REAL, "messages": ask, "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False,
             "temperature": 0, "max_tokens": 64}
    result = json.dumps({"forecast": "sunny", "high_c": 21})
    browser = run_in_the_engine(page, live_app, f"{REAL}-q4f32_1",
                                [first, {"tool_result": result, "tool_choice": "auto", "max_tokens": 40}],
                                expected_console_errors, kernels="cpu")  # the CPU build: SwiftShader takes minutes
    reply, theirs = server_calls(live_app, first)
    assert [r["target"] for r in browser] == ["browser", "browser"]
    assert calls(browser[0]) == theirs and theirs, (browser[0], theirs)
    assert browser[0]["finish"] == "tool_calls"
    print("the model called", theirs)
    message = reply["choices"][0]["message"]
    answered = [{"role": "tool", "tool_call_id": c["id"], "content": result} for c in message["tool_calls"]]
    final = server_reply(live_app, {**first, "messages": [*ask, message, *answered], "tool_choice": "auto", "max_tokens": 40})
    assert browser[1]["content"] == final["choices"][0]["message"]["content"] and browser[1]["content"]
    assert browser[1]["usage"] == final["usage"]
    print("then answered:", browser[1]["content"])

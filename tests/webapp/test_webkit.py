"""The chat page in Safari's engine: Debian's WebKitGTK over classic WebDriver (tests/support/webkit.py).

WebKitGTK has no WebGPU on Linux, and the catalog here holds only the tiny model's q4f16_1 variant,
which has no CPU build: this is the visitor whose browser cannot run the model. The page must say so
once per cause, and every answer comes from the server, token for token the server's own.
The tiny random Llama serves (its greedy answers are runs of unrelated words, so a lost or repeated piece
shows); the page is served with test hooks on, so its own errors are recorded and fail the test.
"""
import json
import time

import jsonschema
import pytest

from tests.support.api import greedy_request, server_answer, server_reply
from tests.support.models import TINY, models_subset
from tests.support.repo import DECISION
from tests.support.structured import CASES
from tests.support.webkit import ENTER, WebKit, WebKitError, open_webkit

SYSTEM = "Be brief."
QUESTIONS = ["What is the capital of France?", "And of Italy?"]
ROUTED = """async () => { const target = document.getElementById("route").dataset.target;
                          return target !== "pending" && target; }"""
ANSWERED = """async (n) => { const answers = document.querySelectorAll(".message.assistant");
  const answer = answers[n];
  if (!answer || answer.dataset.state === "streaming") return null;
  return { state: answer.dataset.state, where: answer.dataset.where, text: answer.querySelector(".content").textContent,
           stats: answer.querySelector(".stats").textContent }; }"""
ANSWERS = "async () => document.querySelectorAll('.message.assistant').length"


@pytest.fixture(scope="module")
def webkit():
    with open_webkit() as browser:
        yield browser


@pytest.fixture
def server(app_server, tiny_models, tmp_path):
    return app_server(models_subset(tiny_models, tmp_path / "models", f"{TINY}-q4f16_1"), test_hooks=True)


def open_page(webkit, url: str, **settings) -> str:
    webkit.goto(url)
    target = webkit.wait_for(ROUTED)
    if settings:
        webkit.click("#settings summary")
        for name, value in settings.items():
            webkit.clear(f"#{name.replace('_', '-')}")
            webkit.type(f"#{name.replace('_', '-')}", str(value))
        webkit.click("#settings summary")
    return target


def send(webkit, text: str) -> int:
    """Type and send a message as a person does; returns the index of the answer it starts."""
    count = webkit.evaluate(ANSWERS)
    webkit.type("#prompt", text + ENTER)
    webkit.wait_for(f"async () => document.querySelectorAll('.message.assistant').length > {count}")
    return count


def ask(webkit, text: str) -> dict:
    return webkit.wait_for(ANSWERED, timeout_s=120, arg=send(webkit, text))


def test_webkit_routes_to_the_server_and_says_why_once(webkit, server):
    assert open_page(webkit, server.url) == "cloud"
    route = webkit.evaluate("async () => document.getElementById('route').textContent")
    assert "this browser cannot run the model" in route
    notice = webkit.wait_for("async () => document.getElementById('notice').textContent")
    assert notice.count("no usable WebGPU") == 1, notice
    decision = webkit.evaluate("async () => window.seam.status().decision")
    DECISION.validate(decision)
    assert [r["code"] for r in decision["reasons"]] == ["browser_cannot_run", "no_webgpu", "no_cpu_build"]
    assert webkit.page_errors() == []


def test_webkit_chats_two_turns_with_the_servers_tokens(webkit, server):
    open_page(webkit, server.url, temperature=0, max_tokens=8, system=SYSTEM)
    history = [{"role": "system", "content": SYSTEM}]
    for question in QUESTIONS:
        shown = ask(webkit, question)
        history.append({"role": "user", "content": question})
        expected = server_answer(server.url, history, 8, TINY)["choices"][0]["message"]["content"]
        assert (shown["state"], shown["where"]) == ("done", "cloud")
        assert shown["text"] == expected, f"turn {len(history) // 2}: the page's answer is not the server's"
        assert shown["stats"].startswith("server")
        history.append({"role": "assistant", "content": shown["text"]})
    assert webkit.page_errors() == []


def test_webkit_stop_and_new_chat(webkit, server):
    # The server's answer stops arriving after its first events (it hangs until the test ends), so Stop
    # meets an answer mid-stream however fast the server is.
    server.faults.add("/v1/chat/completions", "stall", at=700)
    open_page(webkit, server.url, temperature=0, max_tokens=64, system=SYSTEM)
    answer = send(webkit, "Write a long story about a dragon.")
    webkit.wait_for(f"""async () => document.querySelectorAll(".message.assistant .content")[{answer}].textContent""")
    webkit.click("#stop")
    stopped = webkit.wait_for(ANSWERED, arg=answer)
    assert stopped["state"] == "stopped" and "stopped" in stopped["stats"] and stopped["text"]
    webkit.click("#new-chat")
    webkit.wait_for("async () => document.querySelectorAll('#messages .message').length === 0")
    fresh = ask(webkit, QUESTIONS[0])
    expected = server_answer(server.url, [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": QUESTIONS[0]}], 64, TINY)
    assert fresh["text"] == expected["choices"][0]["message"]["content"], "the old conversation leaked into the new"
    assert webkit.page_errors() == []


def test_webkit_answers_with_json_that_follows_the_schema(webkit, server):
    case = CASES[1]  # an array of at most three enum values: short even from a random model
    open_page(webkit, server.url, temperature=0, max_tokens=case["max_tokens"], system=case["messages"][0]["content"])
    webkit.click("#settings summary")
    webkit.evaluate("""async () => { const select = document.getElementById("response-format");
                                     select.value = "json_schema"; select.dispatchEvent(new Event("change", { bubbles: true })); }""")
    webkit.clear("#json-schema")
    webkit.type("#json-schema", json.dumps(case["schema"]))
    webkit.click("#settings summary")
    shown = ask(webkit, case["messages"][-1]["content"])
    assert shown["state"] == "done", shown
    jsonschema.validate(json.loads(shown["text"]), case["schema"])
    expected = server_reply(server.url, greedy_request(case, TINY))["choices"][0]["message"]["content"]
    assert shown["text"] == expected
    assert webkit.page_errors() == []


def test_webkit_keeps_the_settings_across_a_reload(webkit, server):
    open_page(webkit, server.url, temperature=0.3, max_tokens=42, seed=7, system=SYSTEM)
    webkit.evaluate("""async () => { const select = document.getElementById("preference");
                                     select.value = "cloud_only"; select.dispatchEvent(new Event("change", { bubbles: true })); }""")
    webkit.reload()
    webkit.wait_for(ROUTED)
    kept = webkit.evaluate("""async () => Object.fromEntries(["temperature", "max-tokens", "seed", "system", "preference"]
                                .map((id) => [id, document.getElementById(id).value]))""")
    assert kept == {"temperature": "0.3", "max-tokens": "42", "seed": "7", "system": SYSTEM, "preference": "cloud_only"}
    assert webkit.page_errors() == []


def test_a_broken_display_or_a_silent_driver_fails_saying_so_within_the_timeout(tmp_path):
    silent = tmp_path / "silent-driver"
    silent.write_text("#!/bin/sh\nexec sleep 600\n")  # starts, never listens
    silent.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(WebKitError, match="did not start the display .* needs a display"):
        WebKit(xvfb="/bin/false", timeout_s=3)
    with pytest.raises(WebKitError, match="silent-driver did not answer within 3 s"):
        WebKit(driver=str(silent), timeout_s=3)
    assert time.monotonic() - started < 15


"""Tool calling on the server: OpenAI's tools, tool_choice and parallel_tool_calls, each family's call format,
calls constrained so that every one parses and validates, the official `openai` client's tool loop.

The tiny random Llama (SmolLM2's tokenizer and chat template, which takes no tools: the generic format) and
copies of it whose chat template is each family's tool template (tests/support/tool_families.py); random
weights write nonsense, so whatever a call holds it holds because the grammar made it. The real model
runs the client's loop end to end over HTTP.
"""
import json

import jsonschema
import openai
import pytest

from tokenizers import Tokenizer

from router.grammar import Grammars
from router.tools import FORMATS, CallReader, call_text, parse_tools, structural_tag
from tests.support.api import app_over, assert_error
from tests.support.models import TINY
from tests.support.servers import seam_server
from tests.support.tool_families import ASK, TIME, WEATHER, family_folders

VARIANT = f"{TINY}-q4f32_1"


def ask(client, **body):
    return client.post("/v1/chat/completions", json={"model": TINY, "messages": ASK, "max_tokens": 120, **body})


def calls_of(answer: dict, tools=(WEATHER, TIME)) -> list[dict]:
    """The answer's calls, each checked: a known function, arguments that parse and validate."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    calls = answer["choices"][0]["message"].get("tool_calls") or []
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
    return calls


# --- bad input --------------------------------------------------------------------------------------------

BAD_TOOLS = [  # (the request's tool fields, the param named, words of the message)
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name", "letters, digits"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "also the name of tools[0]"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]", '"type": "function"'),
    ({"tools": [WEATHER] + [{"type": "function", "function": {"name": f"f{i}"}} for i in range(64)]}, "tools", "at most 64"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "strnig"}}}}}]}, "tools[0].function.parameters.properties.a.type", "tool f"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"not": {"type": "string"}}}}}}]}, "tools[0].function.parameters.properties.a.not", "cannot be enforced"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "tools[0].function.parameters", "schema of an object"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
     "tool_choice.function.name", "not in tools"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", '"none", "auto", "required"'),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "true or false"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format", "together"),
]


@pytest.mark.parametrize("fields, param, words", BAD_TOOLS)
def test_bad_tools_are_a_400_naming_the_tool_and_the_field(tiny_client, fields, param, words):
    response = ask(tiny_client, **fields)
    assert_error(response, 400, param)
    assert words in response.get_json()["error"]["message"], response.get_json()


BAD_CONVERSATIONS = [  # (messages, the param named)
    ([*ASK, {"role": "tool", "tool_call_id": "call_nowhere", "content": "sunny"}], "messages[1].tool_call_id"),
    ([*ASK, {"role": "tool", "content": "sunny"}], "messages[1].tool_call_id"),
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "user", "content": "hi", "tool_calls": [{"id": "c", "type": "function",
                                                       "function": {"name": "f", "arguments": "{}"}}]}],
     "messages[0].tool_calls"),
]


@pytest.mark.parametrize("messages, param", BAD_CONVERSATIONS)
def test_a_tool_message_must_answer_an_earlier_call(tiny_client, messages, param):
    assert_error(tiny_client.post("/v1/chat/completions", json={"model": TINY, "messages": messages,
                                                                "tools": [WEATHER]}), 400, param)


# --- constrained calls, in each format ------------------------------------------------------------------

@pytest.fixture(scope="module")
def families(tiny_models, tmp_path_factory):
    return family_folders(tiny_models, tmp_path_factory)


@pytest.fixture(scope="module")
def family_clients(families, tmp_path_factory):
    return {fmt: app_over(folder, tmp_path_factory).test_client() for fmt, folder in families.items()}


def test_auto_lets_the_model_write_until_a_call_opens_then_holds_the_call_to_the_schema(tiny_models):
    folder = tiny_models / VARIANT
    grammars = Grammars(Tokenizer.from_file(str(folder / "tokenizer.json")),
                        json.loads((folder / "mlc-chat-config.json").read_text()))
    auto = grammars.tool_constraint(structural_tag(parse_tools({"tools": [WEATHER], "tool_choice": "auto"}), "generic"))
    assert auto.accept_text("Let me look that up. ")
    assert auto.accept_text('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", ')
    assert not auto.accept_text('"days": 9')  # over the schema's maximum
    assert not auto.accept_text('"days":3')   # not the server's JSON style
    assert auto.accept_text('"days": 3}}\n</tool_call>')
    required = grammars.tool_constraint(structural_tag(parse_tools({"tools": [WEATHER], "tool_choice": "required"}), "generic"))
    assert not required.accept_text("Let me look that up.")  # a call first, and nothing but calls


@pytest.mark.parametrize("fmt", ["generic", "hermes", "mistral", "llama3_json"])
def test_every_call_parses_and_validates_in_each_format_greedy_and_sampled(family_clients, fmt):
    client = family_clients[fmt]
    assert [m["tool_format"] for m in client.get("/api/catalog").get_json()["models"] if m["id"] == VARIANT] == [fmt]
    for seed in range(4):
        sampling = {"temperature": 0} if seed == 0 else {"temperature": 1.0, "seed": seed}
        required = ask(client, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False, **sampling).get_json()
        assert required["choices"][0]["finish_reason"] == "tool_calls", required
        assert len(calls_of(required)) == 1 and required["choices"][0]["message"]["content"] is None
        named = ask(client, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}},
                    **sampling).get_json()
        assert [c["function"]["name"] for c in calls_of(named)] == ["get_time"], named
        several = ask(client, tools=[WEATHER, TIME], tool_choice="required", **sampling).get_json()
        assert len(calls_of(several)) >= 1


def test_a_tool_conversation_renders_in_each_format_and_none_answers_in_text(family_clients):
    """The call and its result go back through each family's template (calls as the template writes them), and
    with tool_choice none the answer is text."""
    for fmt, client in family_clients.items():
        first = ask(client, tools=[WEATHER], tool_choice="required", temperature=0).get_json()
        call = calls_of(first)[0]
        history = [*ASK, first["choices"][0]["message"], {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"}]
        final = client.post("/v1/chat/completions", json={"model": TINY, "messages": history, "tools": [WEATHER],
                                                          "tool_choice": "none", "max_tokens": 8, "temperature": 0})
        assert final.status_code == 200, (fmt, final.get_json())
        message = final.get_json()["choices"][0]["message"]
        assert "tool_calls" not in message and message["content"], (fmt, message)


def test_a_streamed_call_comes_as_openai_streams_it(family_clients):
    client = family_clients["hermes"]
    body = {"model": TINY, "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required", "temperature": 0,
            "max_tokens": 120, "stream": True}
    whole = ask(client, tools=[WEATHER, TIME], tool_choice="required", temperature=0).get_json()
    events = [json.loads(line[6:]) for line in client.post("/v1/chat/completions", json=body).get_data(as_text=True).splitlines()
              if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
    pieces = [c for d in deltas for c in d.get("tool_calls", [])]
    opened = [p for p in pieces if "id" in p]
    assert opened and all(p["type"] == "function" and p["function"]["arguments"] == "" for p in opened)
    arguments = {}
    for piece in pieces:
        arguments[piece["index"]] = arguments.get(piece["index"], "") + piece["function"]["arguments"]
    assert len([p for p in pieces if "id" not in p]) > len(opened)  # the arguments came in pieces
    assert [json.loads(a) for a in arguments.values()] == [json.loads(c["function"]["arguments"]) for c in calls_of(whole)]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not "".join(d.get("content") or "" for d in deltas)


def test_an_answer_cut_inside_a_call_goes_on_with_that_call(family_clients):
    """A handover in the middle of a call: the server is given the text so far (markers and all) with
    continue_final_message and the tools; it goes on with the same call (same index, its arguments' rest,
    no second opening) and the whole is the uncut greedy answer. Its stream says each piece's own text."""
    for fmt, client in family_clients.items():
        body = {"model": TINY, "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required", "temperature": 0,
                "max_tokens": 60, "parallel_tool_calls": False, "stream": True}
        events = streamed(client, body)
        pieces = [e["seam"] for e in events if "seam" in e]
        assert all("text" in p for p in pieces)
        cut = opened_at(events) + 2  # two pieces into the call's arguments
        so_far = "".join(p["text"] for p in pieces[:cut])
        assert FORMATS[fmt]["trigger"] in so_far and not so_far.endswith(FORMATS[fmt]["end"]), so_far
        going_on = streamed(client, {**body, "messages": [*ASK, {"role": "assistant", "content": so_far}],
                                     "continue_final_message": True, "max_tokens": 60 - cut,
                                     "continue_token_ids": [i for p in pieces[:cut] for i in p["token_ids"]]})
        calls = [c for e in going_on if e.get("choices") for c in e["choices"][0]["delta"].get("tool_calls", [])]
        assert calls and all(c["index"] == 0 and "id" not in c for c in calls), calls
        first = [c for e in events if e.get("choices") for c in e["choices"][0]["delta"].get("tool_calls", [])]
        whole, rest = ("".join(c["function"]["arguments"] for c in pieces_) for pieces_ in (first, calls))
        assert rest and whole.endswith(rest), (fmt, whole, rest)
        assert "".join(p["text"] for p in pieces) == so_far + "".join(e["seam"]["text"] for e in going_on if "seam" in e)
        assert going_on[-1]["choices"][0]["finish_reason"] == "tool_calls"
    broken = ask(family_clients["generic"], tools=[WEATHER], tool_choice="required", continue_final_message=True,
                 messages=[*ASK, {"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": {"days'}])
    assert_error(broken, 400, "continue_final_message", "invalid_schema")  # city comes first, in the schema's order
    assert "no text or call the tools allow" in broken.get_json()["error"]["message"]


def opened_at(events: list[dict]) -> int:
    """The number of the answer's pieces (events with `seam`) up to and with the one that opened a call."""
    pieces = 0
    for event in events:
        pieces += "seam" in event
        if any("id" in c for c in (event.get("choices") or [{}])[0].get("delta", {}).get("tool_calls", [])):
            return pieces
    raise AssertionError("no call was opened")


def streamed(client, body: dict) -> list[dict]:
    text = client.post("/v1/chat/completions", json=body).get_data(as_text=True)
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


# --- the official client, over HTTP ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(default_built):
    with seam_server(default_built) as url:
        yield url


def test_the_openai_clients_tool_loop_against_the_server(server):
    """A tool, the call (its arguments valid), the tool's result, and the final answer in words; then the same
    call streamed, accumulated from its deltas by the client's own stream helper."""
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
    first = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=messages, tools=[WEATHER],
                                           tool_choice="required", parallel_tool_calls=False, temperature=0,
                                           max_tokens=64)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    print("the model called", call.function.name, arguments)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"forecast": "sunny", "high_c": 21})}]
    final = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=messages, tools=[WEATHER],
                                           temperature=0, max_tokens=48)
    print("then answered:", final.choices[0].message.content)
    assert final.choices[0].message.content and final.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=messages[:1], tools=[WEATHER],
                                            tool_choice="required", parallel_tool_calls=False, temperature=0,
                                            max_tokens=64, stream=True)
    streamed = {"id": None, "name": None, "arguments": ""}
    for chunk in stream:
        for piece in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            streamed["id"] = piece.id or streamed["id"]
            streamed["name"] = (piece.function.name if piece.function else None) or streamed["name"]
            streamed["arguments"] += (piece.function.arguments or "") if piece.function else ""
    assert (streamed["name"], streamed["arguments"]) == (call.function.name, call.function.arguments)


@pytest.mark.parametrize("fmt", ["hermes", "mistral", "llama3_json", "generic"])
def test_calls_are_read_out_of_the_text_however_it_is_split(fmt):
    """CallReader: whatever pieces the text streams in (one character, a few, all), the same content and calls,
    braces and quotes inside strings included; the line break between two calls is not content."""
    arguments = '{"city": "Pa\\"ris}", "n": {"a": [1, {"b": "]}"}]}}'
    assert json.loads(arguments)["city"] == 'Pa"ris}'  # what the grammar lets through: valid JSON, tricky strings
    text = "Sure. " + call_text(fmt, "get_weather", arguments) + "\n" + call_text(fmt, "get_time", "{}")
    for size in (1, 2, 3, 7, len(text)):
        reader, events = CallReader(fmt, ["get_weather", "get_time"]), []
        for start in range(0, len(text), size):
            events += reader.push(text[start:start + size])
        events += reader.end()
        calls: dict[int, dict] = {}
        for event in (e for e in events if isinstance(e, dict)):
            call = calls.setdefault(event["index"], {"name": None, "arguments": ""})
            call["name"] = event.get("name", call["name"])
            call["arguments"] += event.get("arguments", "")
        assert "".join(e for e in events if isinstance(e, str)) == "Sure. "
        assert calls == {0: {"name": "get_weather", "arguments": arguments}, 1: {"name": "get_time", "arguments": "{}"}}
        assert reader.calls == 2

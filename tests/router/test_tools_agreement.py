"""The browser engine's tool calling (webapp/client/lib/engine/tools.js, under node) against the server's
(router/tools.py) on the same inputs: the same refusals in the same words, the same conversation handed to
the chat template and the same prompt from each family's tool template, the same structural tag, and the
same calls read out of the same text however it is split. That both grammars then allow the same tokens is
tests/webapp/test_tools_in_browser.py (web-xgrammar runs only in a browser)."""
import json
import random

import pytest

from modelrun.chat import ChatTemplate
from router import grammar, tools
from tests.support.node import run_js
from tests.support.tool_families import ASK, TEMPLATES, TIME, WEATHER

GRAMMAR = {"json_style": grammar.JSON_STYLE, "unsupported_keywords": list(grammar.UNSUPPORTED_KEYWORDS),
           "limits": grammar.SCHEMA_LIMITS}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich", "days": 2}'}}
CONVERSATION = [{"role": "system", "content": "Be brief."}, *ASK,
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}]

BAD_BODIES = [
    {"tools": {"type": "function"}},
    {"tools": [WEATHER] * 65},
    {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
    {"tools": [{"type": "function", "function": {"name": "x" * 65}}]},
    {"tools": [{"type": "function", "function": {"name": "Zürich"}}]},
    {"tools": [{"type": "function", "function": {}}]},
    {"tools": [{"type": "function"}]},
    {"tools": [WEATHER, TIME, WEATHER]},
    {"tools": [{"type": "function", "function": {"name": "f", "description": 3}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "string", "not": {"const": "b"}}}}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": ["a"]}}}]},
    {"tools": [WEATHER], "tool_choice": "sometimes"},
    {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    {"tool_choice": "required"},
    {"tools": [WEATHER], "parallel_tool_calls": "yes"},
]
GOOD_BODIES = [{}, {"tools": []}, {"tools": [WEATHER], "tool_choice": "none"}, {"tools": [WEATHER, TIME]},
               {"tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False},
               {"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}]
BAD_CONVERSATIONS = [
    [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "21"}],
    [*ASK, {"role": "tool", "content": "21"}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": "hi", "tool_calls": [CALL]}],
]


def python_parse(body):
    try:
        parsed = tools.parse_tools(body)
    except tools.ToolError as error:
        return {"error": str(error)}
    return parsed and {"functions": list(parsed.functions), "choice": parsed.choice, "forced": parsed.forced,
                       "parallel": parsed.parallel}


def test_the_browser_parses_and_refuses_tools_in_the_servers_words():
    browser = run_js("""return data.bodies.map((body) => {
        try { return modules.tools.parseTools(body, data.rules, data.grammar); }
        catch (error) { return { error: error.message, kind: error.kind }; }
    });""", {"bodies": BAD_BODIES + GOOD_BODIES, "rules": tools.RULES, "grammar": GRAMMAR})
    for body, theirs in zip(BAD_BODIES, browser):
        assert theirs == {**python_parse(body), "kind": "InvalidRequestError"}, body
    for body, theirs in zip(GOOD_BODIES, browser[len(BAD_BODIES):]):
        assert theirs == python_parse(body), body


def test_the_browser_refuses_tool_conversations_in_the_servers_words():
    def python_check(messages):
        try:
            tools.check_tool_messages(messages)
        except tools.ToolError as error:
            return str(error)
    browser = run_js("""return data.conversations.map((messages) => {
        try { modules.tools.checkToolMessages(messages); return null; } catch (error) { return error.message; }
    });""", {"conversations": BAD_CONVERSATIONS + [CONVERSATION]})
    assert browser == [python_check(c) for c in BAD_CONVERSATIONS + [CONVERSATION]]
    assert browser[-1] is None and all(browser[:-1])


@pytest.mark.parametrize("fmt", ["generic", "hermes", "mistral", "llama3_json"])
def test_the_same_conversation_tag_and_prompt_on_both_paths(fmt):
    """forTemplate and structuralTag equal the server's for every choice; the prompt each family's tool
    template renders from them is the same text (jinja's tojson as transformers writes it)."""
    bodies = [b for b in GOOD_BODIES if python_parse(b)]
    template = TEMPLATES.get(fmt, "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                                  "{% endfor %}<|im_start|>assistant\n")
    browser = run_js("""const template = new modules.chat_template.ChatTemplate(Template, data.template,
                                                                                { bos_token: "<s>", eos_token: "</s>" });
    return data.bodies.map((body) => {
        const parsed = modules.tools.parseTools(body, data.rules, data.grammar);
        const [messages, templateTools] = modules.tools.forTemplate(data.conversation, parsed, data.fmt, data.rules);
        return { messages, tools: templateTools, tag: modules.tools.structuralTag(parsed, data.fmt, data.rules),
                 prompt: template.render(messages, templateTools) };
    });""", {"bodies": bodies, "conversation": CONVERSATION, "fmt": fmt, "template": template, "rules": tools.RULES,
             "grammar": GRAMMAR})
    chat = ChatTemplate(template, {"bos_token": "<s>", "eos_token": "</s>"})
    for body, theirs in zip(bodies, browser):
        parsed = tools.parse_tools(body)
        messages, template_tools = tools.for_template(CONVERSATION, parsed, fmt)
        assert (theirs["messages"], theirs["tools"]) == (messages, template_tools), body
        assert theirs["tag"] == tools.structural_tag(parsed, fmt), body
        assert theirs["prompt"] == chat.render(messages, template_tools), body
    assert "Z\\u00fcrich" in browser[0]["prompt"] or "Zürich" in browser[0]["prompt"]


@pytest.mark.parametrize("fmt", ["generic", "mistral", "llama3_json"])
def test_the_same_calls_read_from_the_same_text_however_it_is_split(fmt):
    names = ["get_weather", "get_time"]
    text = ("Let me see. " + tools.call_text(fmt, "get_weather", '{"city": "a \\"}{[\\" b", "days": [1, {"x": "}"}]}')
            + "\n" + tools.call_text(fmt, "get_time", '{"zone": "CET"}') + "\nDone <tool")
    rng = random.Random(7)
    splits = [[text], list(text)] + [pieces_of(text, rng) for _ in range(4)]
    browser = run_js("""return data.splits.map((pieces) => {
        const reader = new modules.tools.CallReader(data.fmt, data.names, data.rules);
        return [...pieces.flatMap((p) => reader.push(p)), ...reader.end()];
    });""", {"splits": splits, "fmt": fmt, "names": names, "rules": tools.RULES})
    for pieces, theirs in zip(splits, browser):
        reader = tools.CallReader(fmt, names)
        ours = [event for piece in pieces for event in reader.push(piece)] + reader.end()
        assert merged(theirs) == merged(ours)
        assert all(e["id"].startswith("call_") and len(e["id"]) == 29 for e in theirs if isinstance(e, dict) and "id" in e)
    assert merged(browser[0])[1] == [["get_weather", '{"city": "a \\"}{[\\" b", "days": [1, {"x": "}"}]}'],
                                     ["get_time", '{"zone": "CET"}']]


def pieces_of(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), 12))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def merged(events: list) -> tuple[str, list]:
    """The content, and each call's name and whole arguments (ids are random on each side)."""
    content, calls = "", {}
    for event in events:
        if isinstance(event, str):
            content += event
        elif "id" in event:
            calls[event["index"]] = [event["name"], ""]
        else:
            calls[event["index"]][1] += event["arguments"]
    return content, [calls[i] for i in sorted(calls)]


def test_python_json_is_what_the_server_writes():
    values = [{"city": "Zürich", "n": [1, 2.5, -3, None, True], "e": "\u2028\U0001F600\x7f\x1f", "big": 2 ** 60}]
    assert run_js("return data.values.map(modules.tools.pythonJson);", {"values": values}) == \
        [json.dumps(v) for v in values]

"""Tool calling: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` on the server's engine.

A request's tools are checked here (each refusal names the tool and the field); the conversation is put the
way the model's chat template takes it (`for_template`); the answer is constrained by a grammar built from
the tools (`structural_tag`: from a call's opening marker on, every token must continue a call whose
arguments validate against the function's parameters); and the calls are read back out of the text as it
streams (`CallReader`), into OpenAI's `tool_calls`.

Each model calls tools in its own family's format, which its chat template shows (`tool_format`): Qwen's
`<tool_call>` JSON (`hermes`), Mistral's `[TOOL_CALLS]` (`mistral`), Llama 3.1's bare JSON (`llama3_json`).
A template that takes no tools gets `generic`: the tools are described in a system message of ours, and the
model answers in the `hermes` format (docs/tools.md).
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from router.grammar.schema_checks import SchemaError, check_schema

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's pattern for a function's name
MAX_TOOLS = 64
NO_PARAMETERS = {"type": "object", "properties": {}}

# How each format writes one call: the text that opens it (the function's name in place of {name}), the key
# that holds the arguments, and the text that closes it. The grammar makes the model write these exactly.
# The browser engine gets this table and the generic prompt from the client config (RULES), so both paths
# write and read calls alike (webapp/client/lib/engine/tools.js).
FORMATS = {
    "hermes": {"trigger": "<tool_call>", "begin": '<tool_call>\n{"name": "{name}", "arguments": ', "end": "}\n</tool_call>"},
    "mistral": {"trigger": "[TOOL_CALLS]", "begin": '[TOOL_CALLS] [{"name": "{name}", "arguments": ', "end": "}]"},
    "llama3_json": {"trigger": '{"name": "', "begin": '{"name": "{name}", "parameters": ', "end": "}"},
}
FORMATS["generic"] = FORMATS["hermes"]
GENERIC_PROMPT = ("You can call these tools, described as JSON schemas:\n{tools}\n\nTo call one, answer with "
                  "<tool_call>\n{\"name\": <the tool's name>, \"arguments\": <its arguments as a JSON object>}\n"
                  "</tool_call>\nand nothing else; its result will follow in a message of its own.")
RULES = {"formats": FORMATS, "generic_prompt": GENERIC_PROMPT, "max_tools": MAX_TOOLS, "name_pattern": NAME.pattern}


class ToolError(ValueError):
    """A request's tools, tool choice or tool messages that cannot be served; `param` names the field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Tools:
    functions: tuple[dict, ...]  # {"name", "description", "parameters"}, in the request's order
    choice: str                  # "auto", "required", or the one function's name ("none" leaves no Tools)
    forced: bool                 # choice names one function
    parallel: bool               # several calls in one answer

    def names(self) -> list[str]:
        return [f["name"] for f in self.functions]


def tool_format(template_source: str) -> str:
    """The call format a chat template shows, or "generic" for a template that takes no tools."""
    if "tools" not in template_source:
        return "generic"
    if "[TOOL_CALLS]" in template_source:
        return "mistral"
    if "<tool_call>" in template_source:
        return "hermes"
    if "<|python_tag|>" in template_source or "<|start_header_id|>" in template_source:
        return "llama3_json"
    return "generic"


# --- the request ------------------------------------------------------------------------------------------

def parse_tools(body: dict) -> Tools | None:
    """The request's tools, checked; None when it has none, or tool_choice is "none"."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None or tools == []:
        if choice not in (None, "none"):
            raise ToolError("tool_choice needs tools: send the functions it may call in tools", "tool_choice")
        return None
    if not isinstance(tools, list):
        raise ToolError("tools must be a list of {\"type\": \"function\", \"function\": {...}} objects", "tools")
    if len(tools) > MAX_TOOLS:
        raise ToolError(f"tools has {len(tools)} tools; at most {MAX_TOOLS} are taken", "tools")
    functions = [parse_function(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    seen: dict[str, int] = {}
    for i, function in enumerate(functions):
        if function["name"] in seen:
            raise ToolError(f"tools[{i}].function.name: {function['name']!r} is also the name of tools[{seen[function['name']]}]; "
                            "each tool needs a name of its own", f"tools[{i}].function.name")
        seen[function["name"]] = i
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise ToolError("parallel_tool_calls must be true or false", "parallel_tool_calls")
    choice = parse_choice(choice, seen)
    if choice == "none":
        return None
    return Tools(tuple(functions), choice, forced=choice not in ("auto", "required"), parallel=parallel)


def parse_function(tool, where: str) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise ToolError(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": {{...}}}}}}",
                        where)
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ToolError(f"{where}.function.name must be 1 to 64 letters, digits, underscores or dashes, not "
                        f"{json.dumps(name)[:80]}", f"{where}.function.name")
    description = function.get("description", "")
    if not isinstance(description, str):
        raise ToolError(f"{where}.function.description ({name}) must be a string", f"{where}.function.description")
    parameters = function.get("parameters", NO_PARAMETERS)
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise ToolError(f"{where}.function.parameters ({name}) must be a JSON schema of an object", f"{where}.function.parameters")
    try:
        check_schema(parameters, f"{where}.function.parameters")
    except SchemaError as error:
        raise ToolError(f"tool {name}: {error}", error.param) from None
    return {"name": name, "description": description, "parameters": parameters}


def parse_choice(choice, names: dict[str, int]) -> str:
    if choice is None:
        return "auto"
    if choice in ("none", "auto", "required"):
        return choice
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ToolError('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
                        "tool_choice")
    if function["name"] not in names:
        raise ToolError(f"tool_choice names the function {function['name']!r}, which is not in tools (they are "
                        f"{', '.join(names)})", "tool_choice.function.name")
    return function["name"]


def check_tool_messages(messages: list[dict]) -> None:
    """What the request's schema cannot say of a tool conversation: only an assistant message that calls
    tools may have no text, only it may call, and each tool message answers a call an earlier assistant
    message made, by its id."""
    calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message["role"]
        if message.get("tool_calls") and role != "assistant":
            raise ToolError(f"messages[{i}].tool_calls: only an assistant message calls tools", f"messages[{i}].tool_calls")
        if message.get("content") is None and not message.get("tool_calls"):
            raise ToolError(f"messages[{i}].content must be text (null or absent only in an assistant message with "
                            "tool_calls)", f"messages[{i}].content")
        for call in message.get("tool_calls") or ():
            calls.add(call["id"])
        if role == "tool" and "tool_call_id" not in message:
            raise ToolError(f"messages[{i}] is a tool's result: it needs the tool_call_id of the call it answers",
                            f"messages[{i}].tool_call_id")
        if role == "tool" and message["tool_call_id"] not in calls:
            raise ToolError(f"messages[{i}].tool_call_id {message['tool_call_id']!r} answers no call of an earlier "
                            "assistant message: send the assistant message with that call before its result",
                            f"messages[{i}].tool_call_id")


# --- the prompt -------------------------------------------------------------------------------------------

def openai_tools(tools: Tools) -> list[dict]:
    """The tools as transformers hands them to a chat template."""
    return [{"type": "function", "function": f} for f in tools.functions]


def for_template(messages: list[dict], tools: Tools | None, fmt: str) -> tuple[list[dict], list[dict] | None]:
    """The conversation and the tools as the chat template takes them. A template with tools of its own gets
    them as transformers passes them (calls' arguments as objects); a `generic` one gets the tools described
    in a system message, calls written in the hermes format and results as user messages."""
    if fmt != "generic":
        return [template_message(m) for m in messages], (openai_tools(tools) if tools else None)
    converted = [generic_message(m) for m in messages]
    if tools:
        described = GENERIC_PROMPT.replace("{tools}", "\n".join(json.dumps(t) for t in openai_tools(tools)))
        if converted and converted[0]["role"] == "system":
            converted[0] = {"role": "system", "content": f"{converted[0]['content']}\n\n{described}"}
        else:
            converted.insert(0, {"role": "system", "content": described})
    return converted, None


def template_message(message: dict) -> dict:
    out = {"role": message["role"], "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [{"id": c["id"], "type": "function",
                              "function": {"name": c["function"]["name"], "arguments": arguments_of(c)}}
                             for c in message["tool_calls"]]
    if message["role"] == "tool":
        out["tool_call_id"] = message["tool_call_id"]
    return out


def generic_message(message: dict) -> dict:
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"}
    if message.get("tool_calls"):
        calls = "\n".join(call_text("generic", c["function"]["name"], json.dumps(arguments_of(c)))
                          for c in message["tool_calls"])
        return {"role": "assistant", "content": "\n".join(filter(None, [message.get("content"), calls]))}
    return {"role": message["role"], "content": message.get("content") or ""}


def arguments_of(call: dict):
    """A call's arguments as an object (OpenAI sends them as a JSON string; templates read an object)."""
    try:
        return json.loads(call["function"]["arguments"])
    except (TypeError, ValueError):
        return call["function"]["arguments"]


def begin_text(spec: dict, name: str) -> str:
    return spec["begin"].replace("{name}", name)


def call_text(fmt: str, name: str, arguments: str) -> str:
    spec = FORMATS[fmt]
    return begin_text(spec, name) + arguments + spec["end"]


# --- the grammar ------------------------------------------------------------------------------------------

def structural_tag(tools: Tools, fmt: str) -> dict:
    """xgrammar's structural tag for these tools in this format. With "auto", text until a call's opening
    marker, then a call to one of the functions whose arguments follow its schema (and, with parallel calls,
    text or calls after it); with "required", calls only, one or more (one without parallel calls); with a
    named function, one call of it. The compiler writes each json_schema content in the server's JSON style
    (router/grammar/compilers.py)."""
    spec = FORMATS[fmt]
    tags = [{"type": "tag", "begin": begin_text(spec, f["name"]),
             "content": {"type": "json_schema", "json_schema": f["parameters"]}, "end": spec["end"]}
            for f in tools.functions if not tools.forced or f["name"] == tools.choice]
    if tools.choice == "auto":
        grammar = {"type": "triggered_tags", "triggers": [spec["trigger"]], "tags": tags,
                   "stop_after_first": not tools.parallel}
    else:
        grammar = {"type": "tags_with_separator", "tags": tags, "separator": "\n", "at_least_one": True,
                   "stop_after_first": tools.forced or not tools.parallel}
    return {"type": "structural_tag", "format": grammar}


# --- the answer -------------------------------------------------------------------------------------------

class CallReader:
    """Reads tool calls out of an answer's text as it streams. `push(text)` returns what is ready: content
    text (str) and call events, `{"index", "id", "name"}` when a call opens (its name known) and `{"index",
    "arguments"}` for each piece of its arguments. Text that may still turn into an opening marker is held
    back; `end()` gives what is left. The grammar has made every call well formed: the reader only finds
    where its arguments' JSON object ends (by its braces, outside strings) and skips the closing text."""

    def __init__(self, fmt: str, names: list[str]):
        self.spec = FORMATS[fmt]
        self.begins = {begin_text(self.spec, n): n for n in names}
        self.buffer, self.state, self.calls = "", "text", 0
        self.depth, self.in_string, self.escaped = 0, False, False

    def push(self, text: str) -> list:
        self.buffer += text
        out: list = []
        while getattr(self, f"_{self.state}")(out):
            pass
        return out

    def _text(self, out: list) -> bool:
        trigger = self.spec["trigger"]
        at = self.buffer.find(trigger)
        if at < 0:  # keep a tail that may be the start of a trigger
            keep = next((k for k in range(min(len(trigger) - 1, len(self.buffer)), 0, -1)
                         if trigger.startswith(self.buffer[-k:])), 0)
            self._content(out, self.buffer[:len(self.buffer) - keep])
            self.buffer = self.buffer[len(self.buffer) - keep:]
            return False
        self._content(out, self.buffer[:at])
        self.buffer = self.buffer[at:]
        begin = next((b for b in self.begins if self.buffer.startswith(b)), None)
        if begin is None:
            return False  # the opening marker is not whole yet
        self.buffer = self.buffer[len(begin):]
        out.append({"index": self.calls, "id": f"call_{uuid.uuid4().hex[:24]}", "name": self.begins[begin]})
        self.state, self.depth, self.in_string, self.escaped = "arguments", 0, False, False
        return True

    def _arguments(self, out: list) -> bool:
        closed = None
        for i, char in enumerate(self.buffer):
            if self.in_string:
                self.escaped, self.in_string = (False, True) if self.escaped else (char == "\\", char != '"')
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    closed = i + 1
                    break
        piece, self.buffer = (self.buffer, "") if closed is None else (self.buffer[:closed], self.buffer[closed:])
        if piece:
            out.append({"index": self.calls, "arguments": piece})
        if closed is None:
            return False
        self.state = "closing"
        return True

    def _closing(self, out: list) -> bool:
        end = self.spec["end"]
        if len(self.buffer) < len(end):
            return False
        self.buffer = self.buffer[len(end):]
        self.state, self.calls = "text", self.calls + 1
        return True

    def _content(self, out: list, text: str) -> None:
        if text and not (self.calls and text.isspace()):  # the line breaks between calls are not content
            out.append(text)

    def end(self) -> list:
        rest, self.buffer = self.buffer, ""
        if not rest or self.state == "closing":
            return []
        return [{"index": self.calls, "arguments": rest}] if self.state == "arguments" else [rest]

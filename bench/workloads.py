"""What each engine is asked: the same messages, greedy sampling and output length for every engine.

- load: a fresh start (cold: empty browser cache, so download + compile; warm: from the cache) until the
  first token of a short prompt.
- short: a ~32-token prompt and DECODE_TOKENS generated tokens (time to first token, decode speed).
- long: a ~512-token prompt (the start of the Apache-2.0 license text Debian ships) and a few tokens
  (time to first token, prefill speed).
- json_text, json_schema: one prompt answered as free text and constrained to a JSON schema (Seam's
  engines only; the peers have no such mode here): the cost of constraining.
- tools: a question answered with a call to one tool (tool_choice "required", the call's arguments held to
  the tool's schema by the grammar; Seam's engines only): the cost of a tool call on each path.
- chat: a conversation of CHAT_TURNS turns at the chat page's default sampling, ~200-token answers, each
  turn sent with the whole history as a user's page sends it (Seam's engines: whether a conversation
  keeps its cache, TTFT at the last turn against the first), then the first turn again greedy and sampled
  (the sampler's cost: sampled decode against greedy decode at the same context).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

LICENSE = Path("/usr/share/common-licenses/Apache-2.0")
SYSTEM = {"role": "system", "content": "Answer in JSON."}
SHOPPING = [SYSTEM, {"role": "user", "content": "A shopping list with apples and bread, as JSON."}]
PAGE_SAMPLING = {"temperature": 0.7, "top_p": 0.95}  # the chat page's defaults (webapp/templates/index.html)
CHAT_TURNS = ["What is a good first programming language to learn, and why?",
              "What would a first small project in it look like?",
              "How should I organize the code of that project?",
              "What mistakes do beginners make with it?",
              "How do I test that my program works?",
              "Which tools would help me write it faster?",
              "How would I share it with friends?",
              "What should I learn after that?"]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city, for the next days",
    "parameters": {"type": "object", "required": ["city", "days"], "properties": {
        "city": {"type": "string", "maxLength": 24}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}}
WEATHER = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
SHOPPING_SCHEMA = {"type": "object", "required": ["items"], "properties": {
    "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": {
        "type": "object", "required": ["name", "qty"], "properties": {
            "name": {"type": "string", "maxLength": 12},
            "qty": {"type": "integer", "minimum": 1, "maximum": 99}}}}}}


@dataclass(frozen=True)
class Workload:
    name: str
    messages: list
    max_tokens: int
    response_format: dict | None = None
    kind: str = "generate"  # or "load", "chat"
    seam_only: bool = False
    turns: tuple[str, ...] = ()  # a chat's user messages, one per turn
    tools: tuple[dict, ...] = ()  # the functions a call must be to

    def request(self) -> dict:
        body = {"messages": self.messages, "max_tokens": self.max_tokens, "temperature": 0}
        if self.response_format:
            body["response_format"] = self.response_format
        if self.tools:
            body.update(tools=list(self.tools), tool_choice="required", parallel_tool_calls=False)
        return body


def workloads(tokenizer_json: Path, decode_tokens: int = 128, long_prompt_tokens: int = 512,
              schema_tokens: int = 40, chat_tokens: int = 200) -> list[Workload]:
    # 31 tokens with the chat template; greedy, the default model writes past 128 tokens (a "be brief"
    # prompt stopped at 49, and decode speed would be over fewer tokens than asked for).
    short = [{"role": "system", "content": "Be thorough."},
             {"role": "user", "content": "Explain in detail, in several paragraphs, why the sky is blue."}]
    return [
        Workload("load", short, 1, kind="load"),
        Workload("short", short, decode_tokens),
        Workload("long", [{"role": "user", "content": "Summarize this text:\n\n" +
                           leading_tokens(tokenizer_json, LICENSE.read_text(), long_prompt_tokens)}], 4),
        Workload("json_text", SHOPPING, schema_tokens, seam_only=True),
        Workload("json_schema", SHOPPING, schema_tokens,
                 {"type": "json_schema", "json_schema": {"name": "shopping", "schema": SHOPPING_SCHEMA}},
                 seam_only=True),
        Workload("tools", WEATHER, 48, seam_only=True, tools=(WEATHER_TOOL,)),
        Workload("chat", [], chat_tokens, kind="chat", seam_only=True, turns=tuple(CHAT_TURNS)),
    ]


def run_chat(answer, workload: Workload, tag: int) -> dict:
    """One conversation through `answer(request) -> {ttft_s, decode_tokens_per_s, text, ...}`, then a greedy
    answer to its first turn. `tag` makes each repeat's conversation new to the engine (a kept cache of the
    last repeat's would make its first turn a later one)."""
    messages = [{"role": "system", "content": f"You are a helpful assistant (session {tag})."}]
    turns = []
    for question in workload.turns:
        messages.append({"role": "user", "content": question})
        turns.append(answer({"messages": list(messages), "max_tokens": workload.max_tokens, **PAGE_SAMPLING,
                             "seed": tag}))
        messages.append({"role": "assistant", "content": turns[-1]["text"]})
    # The sampler's cost: the first turn again, greedy then sampled, back to back (the same prompt, the same
    # warm engine), so neither pays for being first or for a longer context.
    opening = {"messages": messages[:2], "max_tokens": workload.max_tokens}
    greedy = answer({**opening, "temperature": 0})
    sampled = answer({**opening, **PAGE_SAMPLING, "seed": tag})
    first, last = turns[0], turns[-1]
    return {"turns": len(turns), "prompt_tokens": last["prompt_tokens"],
            "completion_tokens": sum(t["completion_tokens"] for t in turns),
            "ttft_first_turn_s": first["ttft_s"], "ttft_last_turn_s": last["ttft_s"],
            "ttft_last_over_first": last["ttft_s"] / first["ttft_s"],
            "decode_tokens_per_s": sum(t["decode_tokens_per_s"] for t in turns) / len(turns),
            "sampled_decode_tokens_per_s": sampled["decode_tokens_per_s"],
            "greedy_decode_tokens_per_s": greedy["decode_tokens_per_s"],
            "sampled_over_greedy": sampled["decode_tokens_per_s"] / greedy["decode_tokens_per_s"]}


def leading_tokens(tokenizer_json: Path, text: str, count: int) -> str:
    """The start of `text` that is `count` tokens long (whole words), by the model's own tokenizer."""
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    words = " ".join(text.split()).split(" ")
    low, high = 1, len(words)
    while low < high:  # the longest prefix of words within `count` tokens
        middle = (low + high + 1) // 2
        if len(tokenizer.encode(" ".join(words[:middle]), add_special_tokens=False).ids) <= count:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])

"""A model's chat template, rendered as Hugging Face renders it: one definition for the build's self-check
(modelbuild/chat.py) and the server's engine (router/engine.py), so both turn a conversation into the same
prompt and refuse the same conversations. The browser renders the same template with @huggingface/jinja
(webapp/client/lib/engine/chat_template.js)."""
from __future__ import annotations

import json
import re

from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateRefusal(ValueError):
    """The template called raise_exception: the messages are not a conversation it accepts (e.g. roles out of
    order, a system message where it takes none)."""


def raise_exception(message: str):
    raise TemplateRefusal(f"the chat template refused the messages: {message}")


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """transformers' tojson (jinja2's own sorts keys and escapes HTML), as the tools in a prompt are written."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# Put inside a control token's text typed in a message, so that the tokenizer no longer sees the token.
WORD_JOINER = "\u2060"


def control_tokens(tokenizer_json: str) -> list[str]:
    """The tokenizer's added tokens that mark structure: the special ones, and tags such as Qwen's <tool_call>.
    A tokenizer finds them in any text before anything else, so a user who types one would get the token
    (a forged system turn); messages carry them as text (ChatTemplate.as_text). Longest first, as matched."""
    added = json.loads(tokenizer_json).get("added_tokens", [])
    tokens = {t["content"] for t in added if len(t["content"]) > 1 and (t.get("special") or MARKUP.fullmatch(t["content"]))}
    return sorted(tokens, key=lambda token: (-len(token), token))


MARKUP = re.compile(r"<[^<>]+>|\[[^\[\]]+\]")


class ChatTemplate:
    """`special_tokens`: the texts of the model's bos_token and eos_token, which templates write themselves
    (Llama 3's and Mistral's begin with {{ bos_token }}): the prompt is tokenized without adding any.
    `control_tokens`: what control_tokens() lists; in messages they are text (webapp's chat_template.js
    does the same, tests/js checks the two agree)."""

    def __init__(self, source: str, special_tokens: dict[str, str] | None = None, control_tokens: list[str] = ()):
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = raise_exception
        environment.filters["tojson"] = tojson
        self.template = environment.from_string(source)
        self.special_tokens = {"bos_token": "", "eos_token": "", **(special_tokens or {})}
        self.controls = re.compile("|".join(map(re.escape, control_tokens))) if control_tokens else None

    @classmethod
    def of_model(cls, chat_config: dict) -> "ChatTemplate":
        """The template of a built model, from its mlc-chat-config.json."""
        return cls(chat_config["chat_template"], chat_config.get("special_tokens"), chat_config.get("control_tokens", []))

    def render(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The prompt for a new assistant message after `messages`; raises TemplateRefusal. `tools`: OpenAI's
        function tools, passed to a template that takes them as transformers passes them."""
        messages = [{**m, "content": self.as_text(m["content"])} if isinstance(m.get("content"), str) else m
                    for m in messages]
        extra = {"tools": tools} if tools else {}
        return self.template.render(messages=messages, add_generation_prompt=True, **extra, **self.special_tokens)

    def as_text(self, content: str) -> str:
        """`content` with every control token in it broken by a word joiner: it reads the same, and tokenizes
        as text."""
        return self.controls.sub(lambda m: m[0][0] + WORD_JOINER + m[0][1:], content) if self.controls else content

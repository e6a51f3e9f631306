"""A model's chat template, rendered as Hugging Face renders it: one definition for the build's self-check
and the server's engine (router/engine.py), so both turn a conversation into the same prompt and refuse the
same conversations. The browser renders the same template with @huggingface/jinja (local_engine.js)."""
from __future__ import annotations

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from modelbuild.errors import BuildError

# The self-check's prompt: the first of these whose greedy answer is decisive (selfcheck.decisive_check).
SELF_CHECK_PROMPTS = [[{"role": "user", "content": question}] for question in (
    "What is the capital of France?", "Who wrote Romeo and Juliet?", "What is the largest planet in the solar system?",
    "How many days are in a week?")]
SELF_CHECK_TOKENS = 16


class TemplateRefusal(ValueError):
    """The template called raise_exception: the messages are not a conversation it accepts (e.g. roles out of
    order, a system message where it takes none)."""


def raise_exception(message: str):
    raise TemplateRefusal(f"the chat template refused the messages: {message}")


class ChatTemplate:
    """`special_tokens`: the texts of the model's bos_token and eos_token, which templates write themselves
    (Llama 3's and Mistral's begin with {{ bos_token }}): the prompt is tokenized without adding any."""

    def __init__(self, source: str, special_tokens: dict[str, str] | None = None):
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = raise_exception
        self.template = environment.from_string(source)
        self.special_tokens = {"bos_token": "", "eos_token": "", **(special_tokens or {})}

    @classmethod
    def of_model(cls, chat_config: dict) -> "ChatTemplate":
        """The template of a built model, from its mlc-chat-config.json."""
        return cls(chat_config["chat_template"], chat_config.get("special_tokens"))

    def render(self, messages: list[dict]) -> str:
        """The prompt for a new assistant message after `messages`; raises TemplateRefusal."""
        return self.template.render(messages=messages, add_generation_prompt=True, **self.special_tokens)


def encode_chat(tokenizer_json: str, template: ChatTemplate, messages: list[dict]) -> list[int]:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    try:
        text = template.render(messages)
    except TemplateRefusal as refusal:
        raise BuildError(str(refusal), "check the messages' roles") from None
    return tokenizer.encode(text, add_special_tokens=False).ids

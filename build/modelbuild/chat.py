"""Chat formatting shared by the build's self-check: the model's own Jinja chat template, rendered as
Hugging Face renders it, then tokenized with the model's tokenizer.json."""
from __future__ import annotations

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from modelbuild.errors import BuildError

SELF_CHECK_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
SELF_CHECK_TOKENS = 16


def render_chat(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "") -> str:
    def raise_exception(message):
        raise BuildError(f"the chat template refused the messages: {message}", "check the messages' roles")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos_token, eos_token=eos_token)


def encode_chat(tokenizer_json: str, template: str, messages: list[dict]) -> list[int]:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    return tokenizer.encode(render_chat(template, messages), add_special_tokens=False).ids

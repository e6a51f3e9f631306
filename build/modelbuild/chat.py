"""The build's use of the model's chat template (modelrun/chat.py): the self-check's prompts, encoded as
the server and the page will encode them."""
from __future__ import annotations

from tokenizers import Tokenizer

from modelbuild.errors import BuildError
from modelrun.chat import ChatTemplate, TemplateRefusal

# The self-check's prompt: the first of these whose greedy answer is decisive (selfcheck.decisive_check).
SELF_CHECK_PROMPTS = [[{"role": "user", "content": question}] for question in (
    "What is the capital of France?", "Who wrote Romeo and Juliet?", "What is the largest planet in the solar system?",
    "How many days are in a week?")]
SELF_CHECK_TOKENS = 16


def encode_chat(tokenizer_json: str, template: ChatTemplate, messages: list[dict]) -> list[int]:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    try:
        text = template.render(messages)
    except TemplateRefusal as refusal:
        raise BuildError(str(refusal), "check the messages' roles") from None
    return tokenizer.encode(text, add_special_tokens=False).ids

"""The same chat flow in a second browser engine: Debian's Firefox ESR, WebGPU on Mesa lavapipe.

Lavapipe has `shader-f16`, so the page picks the smaller q4f16_1 variant here; its tokens must equal
the golden tokens the build computed with the CPU library of the same variant.
"""
import json

import pytest
from tokenizers import Tokenizer

from tests.support.firefox import open_firefox
from tests.support.pages import ANSWER_IN_THE_PAGE

F16_VARIANT = "SmolLM2-135M-Instruct-q4f16_1"

USE_THE_API = """async ({ messages, maxTokens }) => {
  const r = await window.seam.chat.completions.create({ messages, temperature: 0, max_tokens: maxTokens });
  return { token_ids: r.seam.token_ids, finish: r.choices[0].finish_reason, content: r.choices[0].message.content };
}"""


@pytest.fixture(scope="module")
def firefox():
    """One Firefox for this module: the second test asks the engine the first one loaded."""
    with open_firefox() as browser:
        yield browser


@pytest.fixture(scope="module")
def self_check(default_built):
    """The f16 variant's catalog entry: the self-check prompt and the golden tokens of its CPU library."""
    entry = next(m for m in json.loads((default_built / "manifest.json").read_text())["models"] if m["id"] == F16_VARIANT)
    tokenizer = Tokenizer.from_file(str(default_built / F16_VARIANT / entry["files"]["tokenizer"]))
    return entry["self_check"], tokenizer


def answer_tokens(check, default_built) -> tuple[list[int], str]:
    """The golden tokens as an answer holds them (without a stop token they may end with) and how it ends."""
    golden = check["golden_token_ids"]
    stop = json.loads((default_built / F16_VARIANT / "mlc-chat-config.json").read_text())["stop_token_ids"]
    return (golden[:-1], "stop") if golden[-1] in stop else (golden, "length")


def test_firefox_picks_loads_and_answers_with_the_f16_variant(firefox, live_app, self_check, default_built):
    check, tokenizer = self_check
    golden = check["golden_token_ids"]
    firefox.goto(live_app)
    shown = firefox.evaluate(ANSWER_IN_THE_PAGE, {"prompt": check["messages"][-1]["content"], "maxTokens": len(golden)})
    assert shown["decision"]["variant"] == F16_VARIANT and shown["loaded"] == F16_VARIANT
    assert shown["state"] == "done" and shown["stats"].startswith("browser · ")
    assert "· software kernels ·" in shown["stats"]  # lavapipe is a software adapter
    assert shown["text"] == tokenizer.decode(answer_tokens(check, default_built)[0])


def test_firefox_gives_the_golden_tokens_through_the_js_api(firefox, self_check, default_built):
    check, _ = self_check
    golden = check["golden_token_ids"]
    api = firefox.evaluate(USE_THE_API, {"messages": check["messages"], "maxTokens": len(golden)})
    assert (api["token_ids"], api["finish"]) == answer_tokens(check, default_built)

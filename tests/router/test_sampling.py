"""Sampling, stop strings, request checks and chat templates: the server's Python (router/sampling.py,
modelrun/chat.py) against the browser's JS (webapp/client/lib/engine/sampling.js, chat_template.js) run
under node on the same inputs. Each must give the same tokens, text, and refusals, bit for bit."""
import json

import numpy as np
import pytest

from modelrun.chat import ChatTemplate, TemplateRefusal
from router.sampling import (SEED_MAX, Detokenizer, SamplingError, first_stop, held_back, parse_sampling, sample,
                             uniforms)
from tests.support.node import run_js

LOGITS = np.array([0.0, 3.0, 2.9, -1.0, 1.0], dtype=np.float32)
LIMITS = {"default_max_tokens": 256, "max_tokens_limit": 2048}
SMOLLM_TEMPLATE = (  # SmolLM2-Instruct's own template (it adds a system message when there is none)
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
STRICT_TEMPLATE = (  # roles must alternate user/assistant, as Llama 2's and Mistral's templates demand
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "[{{ message['role'] }}] {{ message['content'] }}\n{% endfor %}")


def test_the_noise_is_the_same_numbers_in_both_languages():
    pairs = [(seed, position) for seed in (0, 1, 42, 2**31, SEED_MAX) for position in (0, 1, 2, 7, 255, 2047)]
    js = run_js("return data.map(([s, p]) => Array.from(modules.sampling.uniforms(s, p, 300)));", pairs)
    python = [uniforms(s, p, 300).tolist() for s, p in pairs]
    assert js == python
    assert len({u for us in python for u in us}) == 300 * len(pairs) and all(0 < u < 1 for us in python for u in us)


def test_the_noise_is_uniform_and_independent_of_the_position():
    draws = np.concatenate([uniforms(7, p, 1000) for p in range(20)])
    counts, _ = np.histogram(draws, bins=20, range=(0, 1))
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected per bin; 5 sigma is about 150
    assert abs(np.corrcoef(uniforms(7, 3, 5000), uniforms(7, 4, 5000))[0, 1]) < 0.05


def random_logits(rng, vocab: int, masked: float = 0.0) -> np.ndarray:
    logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
    logits[rng.random(vocab) < masked] = -np.inf  # a grammar's mask
    logits[int(rng.integers(vocab))] = 5.0  # never all masked
    return logits


def test_both_engines_choose_the_same_tokens():
    """The whole procedure in both languages: temperatures, nuclei, seeds and positions, masked logits,
    and a vocabulary of the real model's size, where rounding differences would show."""
    rng = np.random.default_rng(0)
    cases = []
    for vocab, masked in ((5, 0.0), (300, 0.5), (49_152, 0.0), (49_152, 0.9)):
        logits = random_logits(rng, vocab, masked)
        for temperature, top_p in ((0, 1), (0.3, 1), (0.7, 0.9), (1.0, 1), (1.3, 0.5), (2.0, 0.95)):
            for seed in (0, 123, SEED_MAX):
                cases.append({"logits": logits, "temperature": temperature, "top_p": top_p, "seed": seed,
                              "positions": list(range(0, 40, 3))})
    # A nucleus cut that an error of 1e-20 in the total would move: two top tokens of equal weight and top_p
    # 1/2, so the cut falls after the first only if the other 49,150 tokens weigh nothing (the browser's
    # rough total cannot tell, and must sum the exact one).
    edge = np.full(49_152, -30.0, np.float32)
    edge[[17, 4000]] = 10.0
    cases += [{"logits": edge, "temperature": t, "top_p": 0.5, "seed": 9, "positions": list(range(20))} for t in (1.0, 3.0)]
    python = [[sample(c["logits"], c["temperature"], c["top_p"], c["seed"], p) for p in c["positions"]] for c in cases]
    assert set(python[-1]) == {17, 4000}  # (the cut really lies at the edge: both tokens are in the nucleus)
    as_json = [{**c, "logits": [None if np.isinf(x) else float(x) for x in c["logits"]]} for c in cases]
    js = run_js("""return data.map((c) => {
        const logits = Float32Array.from(c.logits, (x) => (x === null ? -Infinity : x));
        return c.positions.map((p) => modules.sampling.sample(logits, c, p));
    });""", as_json, timeout_s=300)
    assert js == python
    assert len({t for tokens in python for t in tokens}) > 50  # the cases really draw different tokens


def specified(logits: np.ndarray, temperature: float, top_p: float, seed: int, position: int) -> int:
    """The module docstring's steps 1-5 as plainly as they read: the whole vocabulary sorted by weight, noise
    for every token. The engines' faster way must give its tokens."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scores = (logits.astype(np.float64) - logits.astype(np.float64).max()) / temperature
    if top_p < 1:
        weights = np.exp(scores)
        by_weight = np.argsort(-weights, kind="stable")
        reached = np.searchsorted(np.cumsum(weights[by_weight]), top_p * np.cumsum(weights)[-1])
        outside = np.ones(len(scores), dtype=bool)
        outside[by_weight[:int(reached) + 1]] = False
        scores[outside] = -np.inf
    return int(np.argmax(scores - np.log(-np.log(uniforms(seed, position, len(scores))))))


def test_the_fast_samplers_give_the_specified_tokens():
    """Nucleus over a weight floor, noise only for tokens within reach, and in the browser a rough total
    first: the same tokens as the plain procedure in both languages, on flat and peaked distributions, big
    and small nuclei, masks, ties."""
    rng = np.random.default_rng(1)
    cases = []
    for case in range(60):
        vocab = int(rng.choice([7, 1000, 49_152]))
        spread = float(rng.choice([0.3, 3, 12]))  # flat to peaked
        logits = (rng.standard_normal(vocab) * spread).astype(np.float32)
        if case % 3 == 0:
            logits[rng.random(vocab) < 0.8] = -np.inf
            logits[0] = 1.0
        if case % 5 == 0:
            logits[: vocab // 2] = logits.max()  # many ties at the top
        for temperature, top_p in ((0.7, 0.95), (1.0, 1.0), (1.5, 0.5), (0.2, 0.999), (2.0, 0.05)):
            want = [specified(logits, temperature, top_p, case, position) for position in (0, 9)]
            assert [sample(logits, temperature, top_p, case, p) for p in (0, 9)] == want, (case, temperature, top_p)
            cases.append({"logits": [None if np.isinf(x) else float(x) for x in logits], "temperature": temperature,
                          "top_p": top_p, "seed": case, "want": want})
    js = run_js("""return data.map((c) => {
        const logits = Float32Array.from(c.logits, (x) => (x === null ? -Infinity : x));
        return [0, 9].map((p) => modules.sampling.sample(logits, c, p));
    });""", cases, timeout_s=300)
    assert js == [c["want"] for c in cases]


def decode_bytes(table: dict[int, bytes]):
    """A byte-level decoder: each id is some bytes, the text their UTF-8 (an unfinished character as U+FFFD)."""
    return lambda ids: b"".join(table[i] for i in ids).decode("utf-8", errors="replace")


def test_the_detokenizer_gives_the_whole_text_a_few_tokens_at_a_time_in_both_languages():
    """Tokens that split characters (an emoji's four bytes over three tokens), empty ones, plain words: after
    every token, the text so far and the pending tail are the whole decode's, in Python and in JS."""
    emoji = "☕🐉é".encode()
    table = {0: b"Hello", 1: b" w", 2: emoji[:1], 3: emoji[1:3], 4: emoji[3:5], 5: emoji[5:], 6: b"", 7: b"!", 8: b"\n"}
    rng = np.random.default_rng(3)
    streams = [[int(t) for t in rng.integers(0, 9, size=40)] for _ in range(30)] + [[0, 2, 3, 4, 5, 7], [2, 3]]
    decode = decode_bytes(table)
    python = []
    for ids in streams:
        detokenizer, steps = Detokenizer(decode), []
        for n, token in enumerate(ids, 1):
            detokenizer.push(token)
            assert detokenizer.text + detokenizer.pending == decode(ids[:n])
            steps.append((detokenizer.text, detokenizer.pending))
        python.append(steps)
    js = run_js("""const table = Object.fromEntries(Object.entries(data.table).map(([k, v]) => [k, Uint8Array.from(v)]));
      const utf8 = new TextDecoder();
      const decode = (ids) => utf8.decode(Uint8Array.from(ids.flatMap((i) => [...table[i]])));
      return data.streams.map((ids) => { const d = new modules.sampling.Detokenizer(decode);
                                         return ids.map((t) => { d.push(t); return [d.text, d.pending]; }); });""",
                {"table": {k: list(v) for k, v in table.items()}, "streams": streams})
    assert js == [[list(step) for step in stream] for stream in python]


def test_greedy_nucleus_and_seed():
    assert {sample(LOGITS, 0, 1, seed, p) for seed in range(5) for p in range(20)} == {1}
    # Token 1 alone holds under half of the mass; 1 and 2 together hold more.
    assert {sample(LOGITS, 1.0, 0.5, 3, p) for p in range(200)} == {1, 2}
    first, again = ([sample(LOGITS, 1.5, 1, 7, p) for p in range(50)] for _ in range(2))
    assert first == again and len(set(first)) > 2
    assert first != [sample(LOGITS, 1.5, 1, 8, p) for p in range(50)]


def test_tokens_come_as_often_as_their_probability():
    probabilities = np.exp(LOGITS.astype(np.float64)) / np.exp(LOGITS.astype(np.float64)).sum()
    picks = np.bincount([sample(LOGITS, 1.0, 1, 11, p) for p in range(20_000)], minlength=len(LOGITS)) / 20_000
    assert np.abs(picks - probabilities).max() < 0.015


STOP_CASES = [("Hello world", ["wor", "xyz"]), ("Hello", ["xyz"]), ("The capital is Pa", ["Paris"]),
              ("The capital is P", ["Paris", "Q"]), ("The capital is", ["Paris"]), ("aaa", ["aab", "b"]),
              ("snow \u2603 man", ["\u2603 m", "man"]), ("", ["x"]), ("abc", [""])]


def test_stop_strings_are_found_and_held_back_alike():
    python = [[first_stop(text, tuple(stops)), held_back(text, tuple(stops))] for text, stops in STOP_CASES]
    js = run_js("return data.map(([t, s]) => [modules.sampling.firstStop(t, s), modules.sampling.heldBack(t, s)]);",
                STOP_CASES)
    assert js == python
    assert python[0] == [6, 0] and python[2] == [None, 2] and python[3] == [None, 1]


BAD_REQUESTS = [{"seed": -1}, {"seed": SEED_MAX + 1}, {"seed": 1.5}, {"seed": "7"}, {"stop": 3},
                {"stop": ["a", "b", "c", "d", "e"]}, {"stop": ["a", None]}, {"max_tokens": 0}, {"max_tokens": 5000},
                {"temperature": 2.5}, {"temperature": "hot"}, {"top_p": 0}, {"top_p": 1.5},
                {"seed_position": -3}, {"temperature": 3, "seed": -1}]


def test_bad_sampling_fields_are_refused_in_the_same_words():
    python = []
    for body in BAD_REQUESTS:
        with pytest.raises(SamplingError) as refused:
            parse_sampling(body, LIMITS["default_max_tokens"], LIMITS["max_tokens_limit"])
        python.append({"kind": "InvalidRequestError", "message": str(refused.value)})
    js = run_js("""return data.requests.map((r) => {
        try { modules.sampling.parseSampling(r, data.limits); return { kind: "accepted" }; }
        catch (error) { return { kind: error.kind, message: error.message }; }
    });""", {"requests": BAD_REQUESTS, "limits": LIMITS})
    assert js == python
    assert python[0]["message"] == "seed must be an integer from 0 to 4294967295"


def test_good_sampling_fields_are_read_alike():
    body = {"max_tokens": 9, "temperature": 0.5, "top_p": 0.9, "seed": SEED_MAX, "stop": "x", "seed_position": 4}
    python = parse_sampling(body, **LIMITS)
    js = run_js("return modules.sampling.parseSampling(data.body, data.limits);", {"body": body, "limits": LIMITS})
    assert js == {"max_tokens": 9, "temperature": 0.5, "top_p": 0.9, "seed": SEED_MAX, "stop": ["x"], "seed_position": 4}
    assert (python.max_tokens, python.temperature, python.top_p, python.seed, python.stop, python.seed_position) == \
        (9, 0.5, 0.9, SEED_MAX, ("x",), 4)
    assert parse_sampling({}, **LIMITS).max_tokens == 256


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye {{ not a template }}"}],
    [{"role": "assistant", "content": "I speak first"}],
]


@pytest.mark.parametrize("template", [SMOLLM_TEMPLATE, STRICT_TEMPLATE], ids=["smollm", "strict"])
def test_chat_templates_render_and_refuse_alike(template):
    python = []
    for messages in CONVERSATIONS:
        try:
            python.append({"text": ChatTemplate(template).render(messages)})
        except TemplateRefusal as refusal:
            python.append({"refused": f"{refusal}: send the conversation in an order this model takes"})
    js = run_js("""return data.conversations.map((messages) => {
        try { return { text: new modules.chat_template.ChatTemplate(Template, data.template).render(messages) }; }
        catch (error) { return { refused: error.message, kind: error.kind }; }
    });""", {"template": template, "conversations": CONVERSATIONS})
    assert [{k: v for k, v in r.items() if k != "kind"} for r in js] == python
    # The browser's kind for a refusal is the server's code (chat_template_refused), not "prompt too long".
    assert all(r["kind"] == "ChatTemplateRefusedError" for r in js if "refused" in r)
    refusals = [r for r in python if "refused" in r]
    assert len(refusals) == (2 if template is STRICT_TEMPLATE else 0)
    assert all("roles must alternate" in r["refused"] for r in refusals)
    print(json.dumps(python, indent=1))

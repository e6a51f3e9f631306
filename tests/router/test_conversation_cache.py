"""The server's engine keeps recent conversations' KV caches (router/engine.py ConversationCaches).

On the tiny Llama (head_dim 16, prefill chunks of 16 tokens, so every turn spans several chunks): a next
turn prefills only its new tokens and still gets a fresh cache's logits and tokens; an edited earlier turn
keeps only what comes before the edit; a cancelled answer keeps nothing; many conversations stay within
the stated bound.
"""
from __future__ import annotations

import numpy as np
import pytest

from router.engine import Engine, common_prefix
from router.sampling import Sampling
from tests.support.models import catalog_of

GREEDY = Sampling(max_tokens=24, temperature=0.0)
SAMPLED = Sampling(max_tokens=24, temperature=0.7, top_p=0.95, seed=7)
FIRST = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three rivers of Europe."}]


@pytest.fixture(scope="module")
def entry(tiny_models):
    entry = next(m for m in catalog_of(tiny_models)["models"] if m["id"].endswith("q4f32_1"))
    return tiny_models / entry["path"], entry


def engine_of(entry, **bounds) -> Engine:
    folder, e = entry
    return Engine(folder, e, cache_tokens=bounds.get("tokens", 0),
                  cache_conversations=bounds.get("conversations", 8))


def answer(engine: Engine, messages, sampling=GREEDY, cancelled=lambda: False):
    """(text, token ids, the final chunk) of one answer."""
    chunks = list(engine.generate(engine.prompt_ids(messages), sampling, cancelled))
    return "".join(c.text for c in chunks), [t for c in chunks for t in c.token_ids], chunks[-1]


def next_turn(messages, reply: str, question: str):
    return messages + [{"role": "assistant", "content": reply}, {"role": "user", "content": question}]


def prefill_logits(engine: Engine, prompt: list[int]) -> tuple[np.ndarray, int]:
    """The logits after `prompt`, fed to the sequence the engine's caches give it, and how many of its tokens
    that sequence already held; the sequence is kept."""
    seq, held = engine.caches.take(prompt, GREEDY.max_tokens)
    cached = len(held)
    logits = engine._prefill(seq, held, prompt)
    engine.caches.keep(seq, held)
    return logits, cached


def test_a_next_turn_prefills_only_its_new_tokens_and_gets_a_fresh_caches_logits_and_tokens(entry):
    kept = engine_of(entry)
    conversation = FIRST
    reply, _, _ = answer(kept, conversation, SAMPLED)
    for question in ["And three of Asia, with the countries each of them flows through?",
                     "Which of all six is the longest, and how long is it in kilometres?",
                     "Spell its name backwards, one letter at a time, please."]:
        before, conversation = conversation, next_turn(conversation, reply, question)
        prompt = kept.prompt_ids(conversation)
        (held,) = kept.caches.held.values()
        shared = common_prefix(held, prompt, len(prompt) - 1)
        assert shared > len(prompt) // 2 and len(prompt) - shared > 16  # the turns before; new ones of two chunks
        # A whole sampled answer over the kept cache: the same tokens as on a fresh cache.
        reply, ids, last = answer(kept, conversation, SAMPLED)
        assert last.cached_tokens == shared
        assert (reply, ids) == answer(engine_of(entry), conversation, SAMPLED)[:2]
        # The logits after the new tokens, prefilled over a kept earlier turn, equal a whole prefill's.
        probe = engine_of(entry)
        prefill_logits(probe, probe.prompt_ids(before))
        reused, cached = prefill_logits(probe, prompt)
        full, none = prefill_logits(engine_of(entry), prompt)
        assert (cached, none) == (len(probe.prompt_ids(before)), 0)
        assert np.allclose(reused, full, rtol=1e-5, atol=1e-5 * np.abs(full).max()), np.abs(reused - full).max()


def test_a_prompt_that_does_not_continue_a_kept_conversation_gets_a_fresh_cache(entry):
    engine = engine_of(entry)
    reply, _, _ = answer(engine, FIRST)
    _, _, second = answer(engine, next_turn(FIRST, reply, "And of Asia?"))
    assert second.cached_tokens > len(engine.prompt_ids(FIRST))
    edited = [FIRST[0], {"role": "user", "content": "Name three rivers of Africa."}]
    another_system = [{"role": "system", "content": "Answer in French."}, FIRST[1]]
    for conversation in (next_turn(edited, reply, "And of Asia?"), edited, another_system, FIRST):
        text, ids, last = answer(engine, conversation)
        assert last.cached_tokens == 0, conversation
        assert (text, ids) == answer(engine_of(entry), conversation)[:2]
    assert engine.caches.kept() == 5  # each of them kept for its own next turn


def test_a_cancelled_answer_keeps_no_cache(entry):
    engine = engine_of(entry)
    steps = iter(range(100))
    text, ids, last = answer(engine, FIRST, cancelled=lambda: next(steps) > 5)
    assert last.completion_tokens < GREEDY.max_tokens and engine.caches.kept() == 0
    _, _, again = answer(engine, FIRST)
    assert again.cached_tokens == 0 and engine.caches.kept() == 1


def test_a_client_that_leaves_during_the_prefill_frees_the_engine_within_one_chunk(entry):
    """A long prompt (many prefill chunks of 16 tokens here) whose client leaves after its first chunk:
    the prefill stops at the next chunk, nothing is answered or kept, and the engine answers the next."""
    engine = engine_of(entry)
    prompt = engine.prompt_ids([{"role": "user", "content": "Tell me about rivers. " * 40}])
    chunk = entry[1]["prefill_chunk_size"]
    assert len(prompt) > 8 * chunk
    fed, forward = [], engine.model.forward
    engine.model.forward = lambda cache, seq, function, ids: (fed.append(len(ids)), forward(cache, seq, function, ids))[1]
    left = {"after": 2}  # the check before taking the engine, then the one before the second chunk
    def cancelled():
        left["after"] -= 1
        return left["after"] < 0
    assert list(engine.generate(prompt, GREEDY, cancelled)) == []
    assert fed == [chunk, chunk] and engine.caches.kept() == 0
    _, ids, last = answer(engine, FIRST)
    assert last.finish_reason and ids and last.cached_tokens == 0


def test_twenty_conversations_stay_within_the_stated_bound(entry):
    """KV_CACHE_TOKENS of one context window (1,024 tokens) and KV_CACHE_CONVERSATIONS 8: conversations of
    about 170 tokens each, so the tokens run short before the count does."""
    bound_tokens, bound_conversations = 1024, 8
    engine = engine_of(entry, tokens=bound_tokens, conversations=bound_conversations)
    assert engine.caches.capacity_tokens == bound_tokens
    conversations = [[FIRST[0], {"role": "user", "content": f"Count to {n} in words, please, then stop. " * 8}]
                     for n in range(20)]
    for conversation in conversations:
        reply, _, _ = answer(engine, conversation)
        _, _, last = answer(engine, next_turn(conversation, reply, "Now backwards."))
        assert last.cached_tokens > 100  # its own first turn was still kept
        held = sum(len(tokens) for tokens in engine.caches.held.values())
        assert engine.caches.kept() <= bound_conversations and held <= bound_tokens
    assert engine.caches.kept() < bound_conversations  # the token bound gave the oldest up first
    # The oldest conversation's cache was given up: its next turn starts again, and answers as a fresh cache.
    reply, _, _ = answer(engine_of(entry), conversations[0])
    again = next_turn(conversations[0], reply, "Now backwards.")
    _, ids, last = answer(engine, again)
    assert last.cached_tokens == 0  # (the system prompt and "Count to" of the kept ones are not its own)
    assert ids == answer(engine_of(entry), again)[1]


def test_the_browser_and_the_server_reuse_a_kept_cache_by_the_same_rule():
    """next_turn.js's reusable and router/engine.py's, on the same kept sequences and prompts."""
    from router.engine import reusable
    from tests.support.node import run_js
    held = [1, 2, 3, 4, 5, 6, 7, 8]  # a kept conversation: its prompt (5 tokens), then its answer
    cases = [(held, 5, held + [9, 10]),                 # the next turn: all of it kept
             (held, 5, [1, 2, 3, 4, 5, 6, 99, 9]),      # the answer re-tokenized otherwise: kept up to there
             (held, 5, held),                           # the same prompt again: one token left to prefill
             (held, 5, [1, 2, 3, 4, 5]),                # the prompt it answered, not longer: not a next turn
             (held, 5, [1, 2, 0, 4, 5, 6, 7, 8, 9]),    # an edited earlier turn: a fresh cache
             (held, 5, [9]), ([], 0, [1, 2]), (held, 0, [1, 2, 3])]
    python = [reusable(h, asked, prompt) for h, asked, prompt in cases]
    assert python == [8, 6, 7, None, None, None, 0, 2]
    assert run_js("return data.map(([h, asked, prompt]) => modules.next_turn.reusable(h, asked, prompt));",
                  cases) == python

"""The embedded cloud engine: a model's CPU library from models/, run in-process by modelrun (TVM's runtime).

It loads only what `make build-model` wrote (the `.so`, the tensor cache, tokenizer.json and
mlc-chat-config.json); the server's entry points set TVM_USE_RUNTIME_LIB=1 so that a serving process loads
TVM's runtime library, not the compiler. Only a server with no upstream imports this module (cloud.py).
One model has one KV cache, so answers are generated one at a time; a lock queues concurrent requests. The
cache keeps recent conversations (ConversationCaches), so a conversation's next turn prefills only what is new.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer

from modelrun.chat import ChatTemplate, TemplateRefusal
from modelrun.model import Model, free_pages, kv
from router.answer import CONTEXT_LENGTH_EXCEEDED, Chunk, EngineError
from router.grammar import COMPILE_TIMEOUT_S, Constraint, Grammars
from router.sampling import Sampling, StreamedText, sample, seed_of
from router.tools import Tools, structural_tag, tool_format


class ConversationCaches:
    """The KV caches of recent conversations, kept between answers: one paged KV cache with room for
    `capacity_tokens` tokens, a sequence in it per conversation (at most `conversations`), each known by the
    tokens it holds and the length of the prompt it last answered. An answer whose prompt is the next turn
    of a kept conversation (it begins with that conversation's last prompt and goes on) takes its sequence,
    cut back to the tokens the prompt repeats (at least one prompt token is left to prefill, whose logits
    start the answer); any other prompt gets a new sequence, so a new conversation's answer never depends
    on what was asked before (the browser engine's cacheFor follows the same rule). Sequences least
    recently used give their pages up when room is short. Memory is bounded by the capacity, whatever the
    traffic."""

    def __init__(self, model: Model, capacity_tokens: int, conversations: int):
        self.page_size, self.capacity_tokens = model.page_size, capacity_tokens
        self.conversations = max(0, conversations)  # 0: none kept, every answer prefills its whole prompt
        self.cache = model.kv_cache(max(1, conversations), capacity_tokens)
        self.held: OrderedDict[int, list[int]] = OrderedDict()  # sequence id -> its tokens, least recent first
        self.asked: dict[int, int] = {}  # sequence id -> the length of the prompt it last answered
        self.ids = itertools.count()

    def take(self, prompt: list[int], room: int) -> tuple[int, list[int]]:
        """A sequence for an answer to `prompt` that adds up to `room` tokens after it, and the tokens it
        already holds (the caller extends the list as it feeds tokens)."""
        best, shared = None, 0
        for seq, held in self.held.items():
            n = reusable(held, self.asked[seq], prompt)
            if n is not None and n > shared:
                best, shared = seq, n
        if best is None:
            best = next(self.ids)
            self.make_room(keep=None, sequences=1)
            kv("add_sequence")(self.cache, best)
            self.held[best] = []
        held = self.held.pop(best)  # in use: not given up for room, and gone if the answer fails
        if len(held) > shared:
            kv("popn")(self.cache, best, len(held) - shared)
            del held[shared:]
        self.make_room(keep=best, tokens=len(prompt) - shared + room)
        self.asked[best] = len(prompt)
        return best, held

    def keep(self, seq: int, held: list[int]) -> None:
        """The answer is whole: its sequence is kept for the conversation's next turn, most recent (unless
        no conversation is to be kept)."""
        if self.conversations == 0:
            self.drop(seq)
        else:
            self.held[seq] = held

    def drop(self, seq: int) -> None:
        """An answer that failed or was cancelled: its sequence is given up."""
        self.held.pop(seq, None)
        self.asked.pop(seq, None)
        kv("remove_sequence")(self.cache, seq)

    def make_room(self, keep: int | None, sequences: int = 0, tokens: int = 0) -> None:
        """Gives up least recent sequences until `sequences` more fit and `tokens` more have pages."""
        pages = -(-tokens // self.page_size) + 1  # (+1: a partly filled last page)
        while self.held and (len(self.held) + (keep is not None) + sequences > self.conversations
                             or self.free_pages() < pages):
            oldest, _ = self.held.popitem(last=False)
            del self.asked[oldest]
            kv("remove_sequence")(self.cache, oldest)

    def free_pages(self) -> int:
        return free_pages(self.cache)

    def kept(self) -> int:
        return len(self.held)


def reusable(held: list[int], asked: int, prompt: list[int]) -> int | None:
    """How many of a kept sequence's tokens (`held`) an answer to `prompt` keeps: only when the prompt is the
    next turn of that conversation, beginning with the whole prompt it last answered (`asked` tokens) and
    going on, the tokens it repeats, leaving at least one to prefill; else None. next_turn.js's reusable,
    the same rule."""
    if len(prompt) > asked and common_prefix(held, prompt, asked) == asked:
        return common_prefix(held, prompt, len(prompt) - 1)
    return None


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    while n < min(len(a), len(b), limit) and a[n] == b[n]:
        n += 1
    return n


class Engine:
    def __init__(self, model_dir: Path, entry: dict, schema_timeout_s: float = COMPILE_TIMEOUT_S,
                 cache_tokens: int = 0, cache_conversations: int = 8):
        self.id = entry["id"]
        self.entry = entry
        files = entry["files"]
        self.config = json.loads((model_dir / files["config"]).read_text())
        self.tokenizer = Tokenizer.from_file(str(model_dir / files["tokenizer"]))
        self.template = ChatTemplate.of_model(self.config)
        self.tool_format = tool_format(self.config["chat_template"])  # how this model calls tools
        self.model = Model(model_dir / files["cpu_library"], model_dir / files["tensor_cache"], self.config)
        self.context_window = self.model.context_window
        self.stop_ids = set(self.config["stop_token_ids"])
        self.max_token_bytes = max(len(token.encode()) for token in self.tokenizer.get_vocab(with_added_tokens=True))
        self.lock = threading.Lock()
        self._grammars: Grammars | None = None
        self.schema_timeout_s = schema_timeout_s
        self.caches = ConversationCaches(self.model, max(cache_tokens or 2 * self.context_window, self.context_window),
                                         cache_conversations)

    # --- prompt -----------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict], continue_final: bool = False,
                   continue_ids: tuple[int, ...] | None = None, tools: list[dict] | None = None) -> list[int]:
        """The prompt for a new assistant message, or, with `continue_final`, for going on with the last one
        (an answer that began elsewhere, e.g. in a browser whose GPU failed mid-answer). `continue_ids` are
        that answer's own tokens: its text may tokenize otherwise (a random model's "Cyber" + "save" is
        "Cy" + "bers" + "ave" again), and the answer goes on exactly only from the tokens it drew."""
        head, tail = (messages[:-1], messages[-1]["content"]) if continue_final else (messages, "")
        try:
            text = self.template.render(head, tools)
        except TemplateRefusal as refusal:
            raise EngineError(f"{refusal}: send the conversation in an order this model takes", param="messages",
                              code="chat_template_refused") from None
        if continue_ids is not None and self.spells(continue_ids, tail):
            return self.tokenizer.encode(text, add_special_tokens=False).ids + list(continue_ids)
        return self.tokenizer.encode(text + self.template.as_text(tail), add_special_tokens=False).ids

    def spells(self, ids: tuple[int, ...], text: str) -> bool:
        """Whether these token ids are this text (ids from another model's vocabulary would not be)."""
        return all(i < self.config["vocab_size"] for i in ids) and \
            self.tokenizer.decode(list(ids), skip_special_tokens=True) == text

    def check_size(self, messages: list[dict], max_tokens: int) -> None:
        """Refuses, before tokenizing (a megabyte takes seconds), a conversation too long to fit whatever its
        tokens: no token covers more than `max_token_bytes` bytes of text."""
        size = sum(len(m["content"].encode()) for m in messages)
        at_least = -(-size // self.max_token_bytes)
        if at_least + max_tokens > self.context_window:
            raise EngineError(f"the conversation is {size} bytes, at least {at_least} tokens, and max_tokens is "
                              f"{max_tokens}, but the context window of {self.id} is {self.context_window} tokens: "
                              "shorten the conversation or lower max_tokens", param="messages",
                              code=CONTEXT_LENGTH_EXCEEDED)

    def check_fits(self, prompt: list[int], max_tokens: int) -> None:
        if len(prompt) + max_tokens > self.context_window:
            raise EngineError(f"the prompt is {len(prompt)} tokens and max_tokens is {max_tokens}, but the context "
                              f"window of {self.id} is {self.context_window} tokens: shorten the conversation or "
                              "lower max_tokens", param="messages", code=CONTEXT_LENGTH_EXCEEDED)

    def constraint(self, response_format: dict) -> Constraint:
        """The token mask for one structured answer (raises grammar.SchemaError)."""
        return self.grammars.constraint(response_format)

    def tool_constraint(self, tools: Tools) -> Constraint:
        """The token mask for an answer that may call `tools`, in this model's call format."""
        return self.grammars.tool_constraint(structural_tag(tools, self.tool_format))

    @property
    def grammars(self) -> Grammars:
        if self._grammars is None:  # built on first use: it reads the whole vocabulary
            self._grammars = Grammars(self.tokenizer, self.config, self.schema_timeout_s)
        return self._grammars

    # --- generation -------------------------------------------------------------------------------
    def generate(self, prompt: list[int], sampling: Sampling, cancelled=lambda: False,
                 constraint: Constraint | None = None) -> Iterator[Chunk]:
        """Stream the answer. Holds the model for the whole answer; `cancelled()` ends it early; a
        `constraint` masks every token the response format does not allow."""
        seed = seed_of(sampling)
        with self.lock:
            if cancelled():  # the client left while this answer waited for the engine
                return
            started = time.perf_counter()
            seq, held = self.caches.take(prompt, sampling.max_tokens)
            kept = False
            try:
                for chunk in self._answer(seq, held, prompt, sampling, seed, cancelled, constraint, started):
                    if chunk.finish_reason and not cancelled():  # whole: kept before its reader may leave
                        self.caches.keep(seq, held)
                        kept = True
                    yield chunk
            finally:
                if not kept:  # failed, or its client left (the other path may go on with it): not kept
                    self.caches.drop(seq)

    def _answer(self, seq, held, prompt, sampling, seed, cancelled, constraint, started) -> Iterator[Chunk]:
        """One answer on sequence `seq`, which holds the tokens `held` (extended as tokens are fed)."""
        first, cached = None, len(held)
        logits = self._prefill(seq, held, prompt, cancelled)
        if logits is None:  # the client left during the prefill: the engine is free for the next answer
            return
        streamed = StreamedText(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True), sampling.stop)
        generated = streamed.tokens
        finish = "length"
        while len(generated) < sampling.max_tokens and not cancelled():
            token = sample(constraint.mask(logits) if constraint else logits, sampling.temperature, sampling.top_p,
                           seed, sampling.seed_position + len(generated))
            if constraint:
                constraint.accept(token)
            if token in self.stop_ids:
                finish = "stop"
                break
            piece = streamed.push(token)
            first = first or time.perf_counter()
            if piece:
                yield Chunk(piece[0], completion_tokens=len(generated), token_ids=piece[1])
            if streamed.stopped:
                finish = "stop"
                break
            logits = self.model.forward(self.caches.cache, seq, "decode", [token])
            held.append(token)
        if cancelled():  # its reader left, or stopped reading: no end to tell
            return
        piece = streamed.tail()  # a held-back tail, or tokens that showed no text
        if piece:
            yield Chunk(piece[0], completion_tokens=len(generated), token_ids=piece[1])
        done = time.perf_counter()
        yield Chunk("", finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=len(generated),
                    ttft_s=(first or done) - started, engine_s=done - started, cached_tokens=cached)

    def _prefill(self, seq: int, held: list[int], prompt: list[int], cancelled=lambda: False) -> np.ndarray | None:
        """Feeds the prompt's tokens the sequence does not hold yet; None when the client left meanwhile."""
        new = prompt[len(held):]
        logits = self.model.prefill(self.caches.cache, seq, new, cancelled)
        if logits is not None:
            held.extend(new)
        return logits

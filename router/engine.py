"""The embedded cloud engine: a model's CPU library from models/, run in-process with TVM's runtime.

It loads only what `make build-model` wrote (the `.so`, the tensor cache, tokenizer.json and
mlc-chat-config.json) through TVM's runtime API; the server's entry points set TVM_USE_RUNTIME_LIB=1
so that a serving process loads TVM's runtime library, not the compiler. One model has one KV cache,
so answers are generated one at a time; a lock queues concurrent requests. The cache keeps recent
conversations (ConversationCaches), so a conversation's next turn prefills only what is new.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import tvm
from tokenizers import Tokenizer
from tvm.runtime.vm import VirtualMachine

from modelbuild.chat import ChatTemplate, TemplateRefusal
from router.grammar import COMPILE_TIMEOUT_S, Constraint, Grammars
from router.sampling import Detokenizer, Sampling, first_stop, held_back, sample, seed_of

PAGE_SIZE_DEFAULT = 16


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code: an OpenAI client reads it as "prompt too long"


class EngineError(Exception):
    """A request the engine cannot serve; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class ModelFilesError(RuntimeError):
    """A variant's files are not the ones its catalog entry recorded (a partial copy, a corrupted disk)."""


@dataclass
class Chunk:
    """One piece of an answer: new text, and at the end the finish reason and token counts."""
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0  # the answer's tokens so far (its last chunk: all of them)
    token_ids: list[int] = field(default_factory=list)  # the tokens drawn since the previous chunk
    ttft_s: float = 0.0    # on the last chunk: from the engine taking the answer (not the queue) to its first token
    engine_s: float = 0.0  # and how long the answer held the engine
    cached_tokens: int = 0  # and how many of its prompt's tokens a kept conversation's cache already held


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

    def __init__(self, create, kv, capacity_tokens: int, conversations: int, page_size: int):
        shape = tvm.runtime.ShapeTuple
        self.kv, self.page_size, self.capacity_tokens = kv, page_size, capacity_tokens
        self.conversations = max(0, conversations)  # 0: none kept, every answer prefills its whole prompt
        self.cache = create(shape([max(1, conversations)]), shape([capacity_tokens]), page_size)
        self.held: OrderedDict[int, list[int]] = OrderedDict()  # sequence id -> its tokens, least recent first
        self.asked: dict[int, int] = {}  # sequence id -> the length of the prompt it last answered
        self.ids = itertools.count()

    def take(self, prompt: list[int], room: int) -> tuple[int, list[int]]:
        """A sequence for an answer to `prompt` that adds up to `room` tokens after it, and the tokens it
        already holds (the caller extends the list as it feeds tokens)."""
        best, shared = None, 0
        for seq, held in self.held.items():
            asked = self.asked[seq]
            if len(prompt) > asked and common_prefix(held, prompt, asked) == asked:
                n = common_prefix(held, prompt, len(prompt) - 1)
                if n > shared:
                    best, shared = seq, n
        if best is None:
            best = next(self.ids)
            self.make_room(keep=None, sequences=1)
            self.kv("add_sequence")(self.cache, best)
            self.held[best] = []
        held = self.held.pop(best)  # in use: not given up for room, and gone if the answer fails
        if len(held) > shared:
            self.kv("popn")(self.cache, best, len(held) - shared)
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
        self.kv("remove_sequence")(self.cache, seq)

    def make_room(self, keep: int | None, sequences: int = 0, tokens: int = 0) -> None:
        """Gives up least recent sequences until `sequences` more fit and `tokens` more have pages."""
        pages = -(-tokens // self.page_size) + 1  # (+1: a partly filled last page)
        while self.held and (len(self.held) + (keep is not None) + sequences > self.conversations
                             or self.free_pages() < pages):
            oldest, _ = self.held.popitem(last=False)
            del self.asked[oldest]
            self.kv("remove_sequence")(self.cache, oldest)

    def free_pages(self) -> int:
        return tvm.get_global_func("vm.builtin.attention_kv_cache_get_num_available_pages")(self.cache)

    def kept(self) -> int:
        return len(self.held)


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
        self.device = tvm.cpu()
        # The naive allocator: TVM's default pool keeps a buffer of every size it was ever asked for, and a
        # prefill's sizes follow the prompt's length, so a server's memory grew with each new length.
        self.vm = VirtualMachine(tvm.runtime.load_module(str(model_dir / files["cpu_library"])), self.device,
                                 memory_cfg="naive")
        tensors = load_tensor_cache(model_dir / files["tensor_cache"], self.device)
        self.params = [tensors[name] for name in self.config["param_names"]]
        self.context_window = self.config["context_window_size"]
        self.stop_ids = set(self.config["stop_token_ids"])
        self.max_token_bytes = max(len(token.encode()) for token in self.tokenizer.get_vocab(with_added_tokens=True))
        self.lock = threading.Lock()
        self._grammars: Grammars | None = None
        self.schema_timeout_s = schema_timeout_s
        self._kv = lambda name: tvm.get_global_func(f"vm.builtin.kv_state_{name}")
        self.caches = ConversationCaches(
            lambda sequences, capacity, page: self.vm["create_tir_paged_kv_cache"](
                sequences, capacity, tvm.runtime.ShapeTuple([self.config["prefill_chunk_size"]]),
                tvm.runtime.ShapeTuple([page]), tvm.runtime.ShapeTuple([0])),
            self._kv, max(cache_tokens or 2 * self.context_window, self.context_window), cache_conversations,
            self.config.get("kv_cache_page_size", PAGE_SIZE_DEFAULT))

    # --- prompt -----------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict], continue_final: bool = False,
                   continue_ids: tuple[int, ...] | None = None) -> list[int]:
        """The prompt for a new assistant message, or, with `continue_final`, for going on with the last one
        (an answer that began elsewhere, e.g. in a browser whose GPU failed mid-answer). `continue_ids` are
        that answer's own tokens: its text may tokenize otherwise (a random model's "Cyber" + "save" is
        "Cy" + "bers" + "ave" again), and the answer goes on exactly only from the tokens it drew."""
        head, tail = (messages[:-1], messages[-1]["content"]) if continue_final else (messages, "")
        try:
            text = self.template.render(head)
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
        if self._grammars is None:  # built on first use: it reads the whole vocabulary
            self._grammars = Grammars(self.tokenizer, self.config, self.schema_timeout_s)
        return self._grammars.constraint(response_format)

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
        generated: list[int] = []
        detokenizer = Detokenizer(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))
        shown, text, sent = "", "", 0
        finish = "length"
        while len(generated) < sampling.max_tokens and not cancelled():
            token = sample(constraint.mask(logits) if constraint else logits, sampling.temperature, sampling.top_p,
                           seed, sampling.seed_position + len(generated))
            if constraint:
                constraint.accept(token)
            if token in self.stop_ids:
                finish = "stop"
                break
            generated.append(token)
            text = detokenizer.push(token) + detokenizer.pending  # the whole answer's decode, a window at a time
            stop_at = first_stop(text, sampling.stop)
            if stop_at is not None:
                text, finish = text[:stop_at], "stop"
            # Show only what is final: whole UTF-8 characters, and nothing that may begin a stop string.
            ready = text if finish == "stop" else text[:len(text) - held_back(text, sampling.stop)]
            first = first or time.perf_counter()
            if not ready.endswith("\ufffd") and len(ready) > len(shown):
                yield Chunk(ready[len(shown):], completion_tokens=len(generated), token_ids=generated[sent:])
                shown, sent = ready, len(generated)
            if finish == "stop":
                break
            logits = self._step(seq, held, "decode", [token])
        if cancelled():  # its reader left, or stopped reading: no end to tell
            return
        if len(text) > len(shown) or sent < len(generated):  # a held-back tail, or tokens that showed no text
            yield Chunk(text[len(shown):].rstrip("\ufffd"), completion_tokens=len(generated),
                        token_ids=generated[sent:])
        done = time.perf_counter()
        yield Chunk("", finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=len(generated),
                    ttft_s=(first or done) - started, engine_s=done - started, cached_tokens=cached)

    def _prefill(self, seq: int, held: list[int], prompt: list[int], cancelled=lambda: False) -> np.ndarray | None:
        """Feeds the prompt's tokens the sequence does not hold yet, a prefill chunk at a time; None when
        `cancelled()` turns true between chunks (a long prompt whose client left would hold the engine)."""
        chunk, first = self.config["prefill_chunk_size"], len(held)
        for start in range(first, len(prompt), chunk):
            if start > first and cancelled():
                return None
            logits = self._step(seq, held, "prefill", prompt[start:start + chunk])
        return logits

    def _step(self, seq: int, held: list[int], function: str, token_ids: list[int]) -> np.ndarray:
        shape, cache = tvm.runtime.ShapeTuple, self.caches.cache
        self._kv("begin_forward")(cache, shape([seq]), shape([len(token_ids)]))
        embeddings = self.vm["embed"](tvm.runtime.tensor(np.array(token_ids, dtype="int32"), self.device), self.params)
        logits, _ = self.vm[function](embeddings, cache, self.params)
        self._kv("end_forward")(cache)
        held.extend(token_ids)
        return logits.numpy().reshape(-1)


def load_tensor_cache(index_path: Path, device) -> dict:
    """Read the shards listed in tensor-cache.json, checking each shard's size and sha256 first."""
    index = json.loads(index_path.read_text())
    tensors = {}
    for shard in index["records"]:
        data = (index_path.parent / shard["dataPath"]).read_bytes()
        if len(data) != shard["nbytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise ModelFilesError(f"{shard['dataPath']} does not match its recorded size and sha256")
        for record in shard["records"]:
            raw = data[record["byteOffset"]: record["byteOffset"] + record["nbytes"]]
            array = np.frombuffer(raw, dtype=record["dtype"]).reshape(record["shape"])
            tensors[record["name"]] = tvm.runtime.tensor(array, device)
    return tensors

"""A built model's CPU library run in-process, the one way every Python host runs it: load the library and
the verified weights, create the paged KV cache, add a sequence, then for each step
`begin_forward` -> embed -> prefill/decode -> `end_forward`. The browser engine (local_engine.js) drives the
same exported functions from JS.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine


class ModelFilesError(RuntimeError):
    """A variant's files are not the ones its build recorded (a partial copy, a corrupted disk)."""


def load_tensor_cache(index_path: Path, device) -> dict:
    """The tensors of tensor-cache.json's shards, checking each shard's size and sha256 first."""
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


def kv(name: str):
    """One of TVM's KV-state builtins (add_sequence, remove_sequence, popn, begin_forward, end_forward)."""
    return tvm.get_global_func(f"vm.builtin.kv_state_{name}")


def free_pages(cache) -> int:
    """How many pages of a paged KV cache no sequence holds."""
    return tvm.get_global_func("vm.builtin.attention_kv_cache_get_num_available_pages")(cache)


class Model:
    """`library`: the build's `-cpu.so`; `tensor_index`: its tensor-cache.json; `config`: its
    mlc-chat-config.json (param_names, context_window_size, prefill_chunk_size, kv_cache_page_size)."""

    def __init__(self, library: Path, tensor_index: Path, config: dict):
        self.device = tvm.cpu()
        # The naive allocator: TVM's default pool keeps a buffer of every size it was ever asked for, and a
        # prefill's sizes follow the prompt's length, so a server's memory grew with each new length.
        self.vm = VirtualMachine(tvm.runtime.load_module(str(library)), self.device, memory_cfg="naive")
        tensors = load_tensor_cache(tensor_index, self.device)
        self.params = [tensors[name] for name in config["param_names"]]
        self.context_window = config["context_window_size"]
        self.prefill_chunk = config["prefill_chunk_size"]
        self.page_size = config["kv_cache_page_size"]

    @classmethod
    def of_folder(cls, folder: Path, files: dict) -> "Model":
        """The model a build wrote into `folder`, its file names as build-info.json's `files` lists them."""
        config = json.loads((folder / files["config"]).read_text())
        return cls(folder / files["cpu_library"], folder / files["tensor_cache"], config)

    def kv_cache(self, sequences: int, capacity_tokens: int):
        """A paged KV cache for up to `sequences` sequences and `capacity_tokens` tokens in all."""
        shape = tvm.runtime.ShapeTuple
        return self.vm["create_tir_paged_kv_cache"](shape([sequences]), shape([capacity_tokens]),
                                                    shape([self.prefill_chunk]), shape([self.page_size]), shape([0]))

    def forward(self, cache, seq: int, function: str, token_ids: list[int]) -> np.ndarray:
        """Feeds `token_ids` (at most a prefill chunk) to sequence `seq` with `function` ("prefill" or
        "decode"); the last position's logits."""
        shape = tvm.runtime.ShapeTuple
        kv("begin_forward")(cache, shape([seq]), shape([len(token_ids)]))
        embeddings = self.vm["embed"](tvm.runtime.tensor(np.array(token_ids, dtype="int32"), self.device), self.params)
        logits, _ = self.vm[function](embeddings, cache, self.params)
        kv("end_forward")(cache)
        return logits.numpy().reshape(-1)

    def prefill(self, cache, seq: int, token_ids: list[int], cancelled=lambda: False) -> np.ndarray | None:
        """Feeds `token_ids` a prefill chunk at a time; the last position's logits, or None when `cancelled()`
        turns true between chunks (a long prompt whose client left would hold the engine)."""
        logits = None
        for start in range(0, len(token_ids), self.prefill_chunk):
            if start and cancelled():
                return None
            logits = self.forward(cache, seq, "prefill", token_ids[start:start + self.prefill_chunk])
        return logits

    def conversation(self) -> "Conversation":
        return Conversation(self)

    def greedy(self, prompt_ids: list[int], max_new_tokens: int, stop_ids=()) -> tuple[list[int], list[np.ndarray]]:
        """Greedy tokens after `prompt_ids` in a fresh conversation, and the logits each was chosen from."""
        run = self.conversation()
        return greedy_decode(run.prefill, run.decode, prompt_ids, max_new_tokens, stop_ids)


class Conversation:
    """One sequence from its first token, in a cache of its own: the build's self-check and quality
    command, and the tests. (The server keeps many in one cache: router/engine.py.)"""

    def __init__(self, model: Model):
        self.model, self.cache = model, model.kv_cache(1, model.context_window)
        kv("add_sequence")(self.cache, 0)

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        return self.model.prefill(self.cache, 0, token_ids)

    def decode(self, token_id: int) -> np.ndarray:
        return self.model.forward(self.cache, 0, "decode", [token_id])


def greedy_decode(prefill, decode, prompt_ids: list[int], max_new_tokens: int, stop_ids=()):
    """Greedy continuation of any model given as `prefill(ids) -> logits` and `decode(id) -> logits` (the
    compiled one here, the build's numpy reference); the tokens and the logits each was chosen from."""
    logits = prefill(prompt_ids)
    tokens, all_logits = [], []
    for _ in range(max_new_tokens):
        token = int(logits.argmax())
        tokens.append(token)
        all_logits.append(logits)
        if token in stop_ids:
            break
        logits = decode(token)
    return tokens, all_logits

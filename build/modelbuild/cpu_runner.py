"""Run a built model's CPU library in-process: the build's self-check and the tests use it.

It drives the exported functions the way any host does: create the paged KV cache, add a sequence,
then for each step `begin_forward` -> embed -> prefill/decode -> `end_forward`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.contrib import tvmjs

from modelbuild.manifest import PAGE_SIZE
from modelbuild.selfcheck import greedy_decode


class CpuRunner:
    def __init__(self, library: Path, tensor_cache: Path, param_names: list[str], context_window: int,
                 prefill_chunk: int):
        self.device = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        cached, _ = tvmjs.load_tensor_cache(str(tensor_cache), self.device)
        self.params = [cached[name] for name in param_names]
        self.context_window, self.prefill_chunk = context_window, prefill_chunk
        self._kv_func = lambda name: tvm.get_global_func(f"vm.builtin.kv_state_{name}")
        self.cache = None

    def reset(self) -> None:
        shape = tvm.runtime.ShapeTuple
        self.cache = self.vm["create_tir_paged_kv_cache"](shape([1]), shape([self.context_window]),
                                                          shape([self.prefill_chunk]), shape([PAGE_SIZE]), shape([0]))
        self._kv_func("add_sequence")(self.cache, 0)

    def _step(self, function: str, token_ids: list[int]) -> np.ndarray:
        self._kv_func("begin_forward")(self.cache, tvm.runtime.ShapeTuple([0]), tvm.runtime.ShapeTuple([len(token_ids)]))
        embeddings = self.vm["embed"](tvm.runtime.tensor(np.array(token_ids, dtype="int32"), self.device), self.params)
        logits, self.cache = self.vm[function](embeddings, self.cache, self.params)
        self._kv_func("end_forward")(self.cache)
        return logits.numpy().reshape(-1)

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        """Feed tokens in chunks the kernels were built for; return the last position's logits."""
        for start in range(0, len(token_ids), self.prefill_chunk):
            logits = self._step("prefill", token_ids[start:start + self.prefill_chunk])
        return logits

    def decode(self, token_id: int) -> np.ndarray:
        return self._step("decode", [token_id])

    def greedy(self, prompt_ids: list[int], max_new_tokens: int, stop_ids=()) -> tuple[list[int], list[np.ndarray]]:
        self.reset()
        return greedy_decode(self.prefill, self.decode, prompt_ids, max_new_tokens, stop_ids)

"""The KV cache's prefill attention for CPUs, replacing TVM's own.

TVM 0.27's CPU kernel for attention over a prefill chunk (`batch_prefill_ragged_kv`) is scalar
and walks every key for every query, masked or not, with the rotary branch inside its innermost loop:
on a 549-token prompt it took 38% of SmolLM2's prefill. This one has the same signature and results
(the softmax in base 2, the log-sum-exp it writes), and for each query row and head:
  1. the row, scaled once by sm_scale * log2(e), into a local buffer;
  2. its score against each key it may see (causal: no key after its own position), as four-lane
     partial sums (vectorized) added at the end, and the maximum;
  3. the scores' exponentials and their sum;
  4. the weighted sum of value rows, one vector multiply-add per value element.
Heads run in parallel where the runtime has threads. Rotary embedding inside the kernel
(`rotary_mode` 1, the cache's "inline" mode) is not implemented: our models apply it before the cache
(RopeMode.NORMAL or NONE), and the kernel refuses the call if asked.
"""
from __future__ import annotations

import math

import tvm
from tvm import s_tir
from tvm.script import tirx as T

RAGGED_PREFILL = "batch_prefill_ragged_kv"  # its name in the module the KV cache builds
LOG2E = math.log2(math.e)
LANES = 4  # the partial sums of a score: one wasm SIMD vector of float32


def ragged_prefill(h_kv: int, h_q: int, d: int, dtype: str):
    """The PrimFunc for heads (h_kv, h_q), head size `d` and activations `dtype`."""
    group = h_q // h_kv
    if d % LANES:
        raise ValueError(f"head size {d} is not a multiple of {LANES}")

    @T.prim_func(s_tir=True)
    def batch_prefill_ragged_kv(var_q: T.handle, var_q_indptr: T.handle, var_k: T.handle, var_v: T.handle,
                                var_kv_indptr: T.handle, var_q_rope_position: T.handle,
                                var_k_rope_pos_offset: T.handle, var_output: T.handle, var_lse: T.handle,
                                causal: T.int32, rotary_mode: T.int32, rope_scale: T.float32, rope_theta: T.float32,
                                sm_scale: T.float32):
        T.func_attr({"tirx.noalias": True})
        batch_size, qo_len, kv_len = T.int32(), T.int32(), T.int32()
        q_indptr_offset, kv_indptr_offset, q_rope_offset, k_rope_offset = T.int32(), T.int32(), T.int32(), T.int32()
        q = T.match_buffer(var_q, (qo_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_indptr_offset)
        k = T.match_buffer(var_k, (kv_len, h_kv, d), dtype)
        v = T.match_buffer(var_v, (kv_len, h_kv, d), dtype)
        kv_indptr = T.match_buffer(var_kv_indptr, (batch_size + 1,), "int32", elem_offset=kv_indptr_offset)
        q_rope_position = T.match_buffer(var_q_rope_position, (qo_len,), "int32", elem_offset=q_rope_offset)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_offset)
        output = T.match_buffer(var_output, (qo_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        assert rotary_mode == 0, "this CPU attention kernel applies no rotary embedding (the cache's inline mode)"
        for b in T.serial(batch_size):
            for h in T.parallel(h_q):
                with T.sblock("head"):
                    T.reads()
                    T.writes()
                    scores = T.sblock_alloc_buffer((kv_len,), "float32")
                    row = T.sblock_alloc_buffer((d,), "float32")
                    acc = T.sblock_alloc_buffer((d,), "float32")
                    part = T.sblock_alloc_buffer((LANES,), "float32")
                    stats = T.sblock_alloc_buffer((2,), "float32")  # the scores' maximum, their exponentials' sum
                    q_start: T.let[T.int32] = q_indptr[b]
                    q_rows: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
                    kv_start: T.let[T.int32] = kv_indptr[b]
                    kv_rows: T.let[T.int32] = kv_indptr[b + 1] - kv_indptr[b]
                    for i in T.serial(q_rows):
                        seen: T.let[T.int32] = T.if_then_else(causal > 0, T.min(kv_rows - q_rows + i + 1, kv_rows),
                                                              kv_rows)
                        for c in T.serial(d):
                            row[c] = T.Cast("float32", q[q_start + i, h, c]) * sm_scale * T.float32(LOG2E)
                        stats[0] = T.float32(-5e4)
                        for j in T.serial(seen):
                            for lane in T.vectorized(LANES):
                                part[lane] = T.float32(0)
                            for c_out in T.serial(d // LANES):
                                for lane in T.vectorized(LANES):
                                    part[lane] = part[lane] + row[c_out * LANES + lane] * T.Cast(
                                        "float32", k[kv_start + j, h // group, c_out * LANES + lane])
                            scores[j] = part[0] + part[1] + part[2] + part[3]
                            stats[0] = T.max(stats[0], scores[j])
                        stats[1] = T.float32(0)
                        for j in T.serial(seen):
                            scores[j] = T.exp2(scores[j] - stats[0])
                            stats[1] = stats[1] + scores[j]
                        for c in T.vectorized(d):
                            acc[c] = T.float32(0)
                        for j in T.serial(seen):
                            for c in T.vectorized(d):
                                acc[c] = acc[c] + scores[j] * T.Cast("float32", v[kv_start + j, h // group, c])
                        for c in T.vectorized(d):
                            output[q_start + i, h, c] = T.Cast(dtype, acc[c] / stats[1])
                        lse[q_start + i, h] = stats[0] + T.log2(stats[1])

    return batch_prefill_ragged_kv


def use_cpu_attention(mod: tvm.ir.IRModule) -> tvm.ir.IRModule:
    """`mod` with TVM's CPU prefill attention replaced by ours, sized from the one it replaces."""
    names = {gvar.name_hint: gvar for gvar in mod.get_global_vars()}
    if RAGGED_PREFILL not in names:
        return mod
    old = mod[names[RAGGED_PREFILL]]
    sch = s_tir.Schedule(old)
    reads = {r.source.name: r.source for r in sch.get(sch.get_sblock("attn")).reads}  # (its one block)
    q, k = reads["q"], reads["k"]
    mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
    mod[names[RAGGED_PREFILL]] = ragged_prefill(int(k.shape[1]), int(q.shape[1]), int(q.shape[2]), str(q.dtype))
    return mod

"""The KV cache's attention kernels for CPUs, replacing TVM's own.

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

The same steps, with keys and values read from the cache's pages, replace TVM's two paged kernels, which
are scalar too and do the online softmax's rescaling for every key: the prefill over a conversation's
earlier pages (`batch_prefill_paged_kv_cpu`: a next turn's new tokens attending to the kept ones) and the
decode step (`batch_decode_paged_kv_cpu`: one query per sequence over all of its pages). A query that may
see no key (a paged prefill whose keys all come after it) gets TVM's empty state: zeros, log-sum-exp -5e4.
"""
from __future__ import annotations

import math

import tvm
from tvm import s_tir
from tvm.script import tirx as T

RAGGED_PREFILL = "batch_prefill_ragged_kv"  # the kernels' names in the module the KV cache builds
PAGED_PREFILL = "batch_prefill_paged_kv_cpu"
PAGED_DECODE = "batch_decode_paged_kv_cpu"
EMPTY_LSE = -5e4  # the log-sum-exp of a query that sees no key, as TVM's kernels write it
LOG2E = math.log2(math.e)
LANES = 4  # the partial sums of a score: one wasm SIMD vector of float32


def ragged_prefill(h_kv: int, h_q: int, d: int, dtype: str):
    """The PrimFunc for heads (h_kv, h_q), head size `d` and activations `dtype`."""
    group = h_q // h_kv
    check_head_size(d)

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


def paged_attend(h_q: int, h_kv: int, d: int, page_size: int, dtype: str):
    """A macro: steps 1-4 above for query `row` and head `h`, over the first `seen` keys of a sequence whose
    pages are `page_values[page_begin:]`."""
    group = h_q // h_kv

    @T.macro
    def attend_row(q: T.Buffer, pages: T.Buffer, page_values: T.Buffer, output: T.Buffer, lse: T.Buffer,
                   row: T.int32, h: T.int32, page_begin: T.int32, seen: T.int32, sm_scale: T.float32):
        scores = T.sblock_alloc_buffer((pages.shape[0] * page_size,), "float32")
        query = T.sblock_alloc_buffer((d,), "float32")
        acc = T.sblock_alloc_buffer((d,), "float32")
        part = T.sblock_alloc_buffer((LANES,), "float32")
        stats = T.sblock_alloc_buffer((2,), "float32")  # the scores' maximum, their exponentials' sum
        for c in T.serial(d):
            query[c] = T.Cast("float32", q[row, h, c]) * sm_scale * T.float32(LOG2E)
        stats[0] = T.float32(EMPTY_LSE)
        for j in T.serial(seen):
            for lane in T.vectorized(LANES):
                part[lane] = T.float32(0)
            for c_out in T.serial(d // LANES):
                for lane in T.vectorized(LANES):
                    part[lane] = part[lane] + query[c_out * LANES + lane] * T.Cast(
                        "float32", pages[page_values[page_begin + j // page_size], 0, h // group, j % page_size,
                                         c_out * LANES + lane])
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
                acc[c] = acc[c] + scores[j] * T.Cast(
                    "float32", pages[page_values[page_begin + j // page_size], 1, h // group, j % page_size, c])
        for c in T.vectorized(d):
            output[row, h, c] = T.Cast(dtype, T.if_then_else(seen > 0, acc[c] / stats[1], T.float32(0)))
        lse[row, h] = T.if_then_else(seen > 0, stats[0] + T.log2(stats[1]), T.float32(EMPTY_LSE))

    return attend_row


def paged_prefill(h_kv: int, h_q: int, d: int, page_size: int, dtype: str):
    """TVM's `batch_prefill_paged_kv_cpu` (no sliding window): each sequence's queries over its pages."""
    check_head_size(d)
    attend_row = paged_attend(h_q, h_kv, d, page_size, dtype)

    @T.prim_func(s_tir=True)
    def batch_prefill_paged_kv_cpu(var_q: T.handle, var_q_indptr: T.handle, var_pages: T.handle,
                                   var_page_indptr: T.handle, var_page_values: T.handle, var_length_info: T.handle,
                                   var_k_rope_pos_offset: T.handle, var_q_rope_position: T.handle,
                                   var_output: T.handle, var_lse: T.handle, causal: T.int32, rotary_mode: T.int32,
                                   rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.noalias": True})
        batch_size, total_len, nnz_pages, max_num_pages = T.int32(), T.int32(), T.int32(), T.int32()
        q_off, page_indptr_off, page_values_off, k_rope_off, q_rope_off, length_off = (
            T.int32(), T.int32(), T.int32(), T.int32(), T.int32(), T.int32())
        q = T.match_buffer(var_q, (total_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_off)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, h_kv, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=page_indptr_off)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=page_values_off)
        last_page_len = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=length_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (total_len,), "int32", elem_offset=q_rope_off)
        output = T.match_buffer(var_output, (total_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (total_len, h_q), "float32")

        assert rotary_mode == 0, "this CPU attention kernel applies no rotary embedding (the cache's inline mode)"
        for b in T.serial(batch_size):
            for h in T.parallel(h_q):
                with T.sblock("head"):
                    T.reads()
                    T.writes()
                    page_begin: T.let[T.int32] = page_indptr[b]
                    kv_len: T.let[T.int32] = kv_length(page_indptr, last_page_len, b, page_size)
                    q_rows: T.let[T.int32] = q_indptr[b + 1] - q_indptr[b]
                    for i in T.serial(q_rows):
                        attend_row(q, pages, page_values, output, lse, q_indptr[b] + i, h, page_begin,
                                   T.if_then_else(causal > 0, T.max(T.min(kv_len - q_rows + i + 1, kv_len), 0), kv_len),
                                   sm_scale)

    return batch_prefill_paged_kv_cpu


def paged_decode(h_kv: int, h_q: int, d: int, page_size: int, dtype: str):
    """TVM's `batch_decode_paged_kv_cpu` (no sliding window): one query per sequence, over all its pages."""
    check_head_size(d)
    attend_row = paged_attend(h_q, h_kv, d, page_size, dtype)

    @T.prim_func(s_tir=True)
    def batch_decode_paged_kv_cpu(var_q: T.handle, var_pages: T.handle, var_page_indptr: T.handle,
                                  var_page_values: T.handle, var_length_info: T.handle,
                                  var_k_rope_pos_offset: T.handle, var_q_rope_position: T.handle,
                                  var_output: T.handle, var_lse: T.handle, rotary_mode: T.int32,
                                  rope_scale: T.float32, rope_theta: T.float32, sm_scale: T.float32):
        T.func_attr({"tirx.noalias": True})
        batch_size, nnz_pages, max_num_pages = T.int32(), T.int32(), T.int32()
        page_indptr_off, page_values_off, k_rope_off, q_rope_off, length_off = (
            T.int32(), T.int32(), T.int32(), T.int32(), T.int32())
        q = T.match_buffer(var_q, (batch_size, h_q, d), dtype)
        pages = T.match_buffer(var_pages, (max_num_pages, 2, h_kv, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=page_indptr_off)
        page_values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=page_values_off)
        last_page_len = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=length_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=k_rope_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (batch_size,), "int32", elem_offset=q_rope_off)
        output = T.match_buffer(var_output, (batch_size, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (batch_size, h_q), "float32")

        assert rotary_mode == 0, "this CPU attention kernel applies no rotary embedding (the cache's inline mode)"
        for b in T.serial(batch_size):
            for h in T.parallel(h_q):
                with T.sblock("head"):
                    T.reads()
                    T.writes()
                    attend_row(q, pages, page_values, output, lse, b, h, page_indptr[b],
                               kv_length(page_indptr, last_page_len, b, page_size), sm_scale)

    return batch_decode_paged_kv_cpu


def kv_length(page_indptr, last_page_len, b, page_size: int):
    """The keys sequence `b` holds in its pages: all of them full but the last."""
    pages = page_indptr[b + 1] - page_indptr[b]
    return T.if_then_else(pages > 0, (pages - 1) * page_size + last_page_len[b], 0)


def check_head_size(d: int) -> None:
    if d % LANES:
        raise ValueError(f"head size {d} is not a multiple of {LANES}")


def use_cpu_attention(mod: tvm.ir.IRModule) -> tvm.ir.IRModule:
    """`mod` with TVM's CPU attention kernels replaced by ours, each sized from the one it replaces."""
    names = {gvar.name_hint: gvar for gvar in mod.get_global_vars()}
    mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
    if RAGGED_PREFILL in names:
        q, k = kernel_buffers(mod[names[RAGGED_PREFILL]], "attn", "q", "k")
        mod[names[RAGGED_PREFILL]] = ragged_prefill(int(k.shape[1]), int(q.shape[1]), int(q.shape[2]), str(q.dtype))
    for name, make, query in ((PAGED_PREFILL, paged_prefill, "q"), (PAGED_DECODE, paged_decode, "Q")):
        if name in names:
            q, pages = kernel_buffers(mod[names[name]], "attn", query, "pages")
            h_kv, page_size = int(pages.shape[2]), int(pages.shape[3])
            mod[names[name]] = make(h_kv, int(q.shape[1]), int(q.shape[2]), page_size, str(q.dtype))
    return mod


def kernel_buffers(func: tvm.tirx.PrimFunc, block: str, *names: str):
    """The buffers named `names` that `block` of `func` reads."""
    sch = s_tir.Schedule(func)
    reads = {r.source.name: r.source for r in sch.get(sch.get_sblock(block)).reads}
    return [reads[name] for name in names]

"""The KV cache's merge of two attention states for WebGPU, replacing TVM's own.

When a prefill goes on from tokens already in the cache (a prompt's second chunk, a conversation's next
turn), the cache computes attention over the new tokens and over the earlier pages apart, then merges the
two by their log-sum-exps. TVM 0.27's WebGPU merge (`merge_state_inplace`: float16's vector width assumed
for every dtype, four values per thread over head_dim / 4 threads) gives wrong outputs for head_dim 32
and up, on SwiftShader and llvmpipe alike (tests/modelbuild/test_families.py found it as "chunked prefill
is wrong"; with this merge, several chunks give one chunk's logits to 1e-6 of their scale). This one is
plain: 32 threads per head of each row, each over every 32nd value, in float32, the same formula:
    m = max(s, s'),  w = 2^(s - m),  w' = 2^(s' - m),  v = (v w + v' w') / (w + w'),  s = log2(w + w') + m.
It is cheap next to the attention it merges (a few multiply-adds per output value).

TVM's WebGPU attention kernels (prefill over a chunk, over the pages, tree attention, decode) are kept, but
without their branch for the cache's inline RoPE (`rotary_mode` 1), which our models never take: they apply
RoPE before the cache (RopeMode.NORMAL or NONE), so the cache passes 0, and a kernel now refuses 1, as the
CPU kernels do (cpu_attention.py). With that dead branch in, TVM 0.27's common-subexpression pass broke the
prefill kernels of a model with ONE key/value head, head_dim 16 and float32 activations (a tiny Llama with
hidden 64, 4 heads, 1 KV head; q0f32 and q4f32_1): it bound a value the branch shares with the key loads
after the branch had used it (raw "InternalError: variable cse_v12 has been used before definition").
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.script import tirx as T

MERGE = "tir_attention_merge_state"  # its name in the module the KV cache builds
INLINE_ROPE = "rotary_mode"  # the attention kernels' flag: 1 would apply RoPE inside them
LANES = 32  # threads per (row, head), each over every 32nd value of the head


def merge_state(dtype: str):
    """The PrimFunc merging (v_other, s_other) into (v, s), for activations of `dtype`."""

    @T.prim_func(s_tir=True)
    def merge_state_inplace(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": MERGE})
        rows, heads, head_dim = T.int32(), T.int32(), T.int32()
        V = T.match_buffer(v, (rows, heads, head_dim), dtype)
        S = T.match_buffer(s, (rows, heads), "float32")
        V_other = T.match_buffer(v_other, (rows, heads, head_dim), dtype)
        S_other = T.match_buffer(s_other, (rows, heads), "float32")
        for row in T.thread_binding(rows, thread="blockIdx.x"):
            for head in T.thread_binding(heads, thread="blockIdx.y"):
                for lane in T.thread_binding(LANES, thread="threadIdx.x"):
                    with T.sblock("merge"):
                        T.reads()
                        T.writes()
                        state = T.sblock_alloc_buffer((3,), "float32", scope="local")  # m, w, w'
                        state[0] = T.max(S[row, head], S_other[row, head])
                        state[1] = T.exp2(S[row, head] - state[0])
                        state[2] = T.exp2(S_other[row, head] - state[0])
                        for step in T.serial(T.ceildiv(head_dim, LANES)):
                            if step * LANES + lane < head_dim:
                                c: T.let[T.int32] = step * LANES + lane
                                V[row, head, c] = T.Cast(dtype, (T.Cast("float32", V[row, head, c]) * state[1]
                                                                 + T.Cast("float32", V_other[row, head, c]) * state[2])
                                                                / (state[1] + state[2]))
                        T.tvm_storage_sync("shared")  # every lane has read S before lane 0 writes it
                        if lane == 0:
                            S[row, head] = T.log2(state[1] + state[2]) + state[0]

    return merge_state_inplace


def without_inline_rope(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` (one of the cache's attention kernels) with its `rotary_mode` branch for inline RoPE removed:
    the same signature, the same results for `rotary_mode` 0, and a refusal of any other value."""
    flag = next(p for p in func.params if p.name == INLINE_ROPE)
    body = func.specialize({flag: tirx.IntImm("int32", 0)}).body  # the branch simplifies away when lowered
    refuse = tirx.AssertStmt(flag == 0, tvm.ir.StringImm("RuntimeError"), [tvm.ir.StringImm(
        "this WebGPU attention kernel applies no rotary embedding (the cache's inline mode)")])
    return tirx.PrimFunc(list(func.params), tirx.SeqStmt([refuse, body]), func.ret_type, func.attrs)


def use_gpu_attention(mod: tvm.ir.IRModule) -> tvm.ir.IRModule:
    """`mod` with TVM's WebGPU merge of attention states replaced by ours, for the same dtype, and its attention
    kernels without inline RoPE."""
    names = {gvar.name_hint: gvar for gvar in mod.get_global_vars()}
    mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and any(p.name == INLINE_ROPE for p in func.params):
            mod[gvar] = without_inline_rope(func)
    if MERGE in names:
        sch = s_tir.Schedule(mod[names[MERGE]])
        values = next(r.source for r in sch.get(sch.get_sblock("merge")).reads if r.source.name == "V")
        mod[names[MERGE]] = merge_state(str(values.dtype))
    return mod

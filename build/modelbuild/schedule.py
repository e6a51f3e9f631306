"""Schedules for every kernel, in two sets per WebGPU build and one for the CPU, and a record of which
schedule each kernel got.

A WebGPU model is compiled twice (models/README.md: kernel sets), and the browser engine loads the set
that suits its adapter:
  software  for adapters that run on the CPU (SwiftShader, llvmpipe/lavapipe): an invocation is a SIMD
            lane and workgroup barriers cost 3-9x, so the quantized matmuls are barrier-free, one column
            per invocation (SoftwareDequantMatmul);
  gpu       for GPUs: decode's matrix-vector products split K across a workgroup and sum in shared memory
            (GpuDequantGemv); prefill's matrix products use DLight's Matmul rule (shared-memory tiles).
Every other kernel gets DLight's rules in both sets: Reduction/GeneralReduction for norms and softmax,
Matmul and GEMV for float matmuls, Fallback (one invocation per output) for elementwise kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.ir.transform import module_pass
from tvm.s_tir import dlight as dl
from tvm.target import Target

KERNEL_SETS = ("software", "gpu")


class SoftwareDequantMatmul(dl.ScheduleRule):
    """`x[1, n, K] @ dequantize(W)[O, K].T` (+ elementwise epilogue) for software adapters (SwiftShader,
    llvmpipe), where an invocation is one SIMD lane of a CPU core and workgroup barriers are expensive.

    One invocation per output column and row. Neighbouring invocations take neighbouring columns, so
    each reads the packed word next to its neighbour's (the layout of group_quant.py): the lanes' loads
    are one vector load, not a gather. Each word is loaded once into a register and its codes decoded
    there (the code loop unrolled, so every shift is a constant), each group's scale and minimum once per
    group; the activations are the same for every lane. No barriers, no shared memory.

    Measured on this machine's two adapters (SmolLM2-135M, 32-token prefill): tiles of 2-8 rows per
    invocation, with the code loop rolled or unrolled, ran prefill 7-16% faster on llvmpipe but 2.5-3x
    slower on SwiftShader (which also lost the device compiling 4 rows x 8 unrolled codes), so one row.
    """

    THREADS = 64

    def apply(self, func, target, tunable):
        if (found := _match(func)) is None:
            return None
        sch, (dequantize, main, epilogues) = found.sch, found.blocks
        batch, rows, cols, k = found.loops
        group, word, code = sch.split(k, [None, 32 // found.per_word, found.per_word])
        col_block, thread = sch.split(cols, [None, self.THREADS])
        sch.reorder(batch, rows, col_block, thread, group, word, code)
        sch.bind(sch.fuse(batch, rows), "blockIdx.y")
        sch.bind(col_block, "blockIdx.x")
        sch.bind(thread, "threadIdx.x")
        sch.compute_inline(dequantize)
        packed, group_params = _weight_reads(sch, main)
        sch.compute_at(sch.cache_read(main, packed, "local"), word)
        for index in group_params:  # (cache_read keeps the other reads' indices)
            sch.compute_at(sch.cache_read(main, index, "local"), group)
        accumulate = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(accumulate, thread)
        for epilogue in epilogues:  # e.g. the residual add: applied while writing the result back
            sch.reverse_compute_inline(epilogue)
        sch.decompose_reduction(main, group)
        sch.unroll(code)
        return sch


class GpuDequantGemv(dl.ScheduleRule):
    """Decode's `x[1, 1, K] @ dequantize(W)[O, K].T` (+ epilogue) on GPUs: a workgroup of COLS x SPLIT
    invocations computes COLS columns. Neighbouring invocations (threadIdx.x) take neighbouring columns,
    so a warp's loads of packed words are coalesced; the SPLIT invocations of a column (threadIdx.y) each
    sum a contiguous 1/SPLIT of K, and their partial sums meet in one cross-thread reduction (shared
    memory). Like DLight's GEMV (which does not match this layout's separate dequantize block)."""

    COLS, SPLITS = 32, (8, 6, 4, 3, 2, 1)

    def apply(self, func, target, tunable):
        if (found := _match(func)) is None or not _is_one(found.sch, found.loops[1]):
            return None
        sch, (dequantize, main, epilogues) = found.sch, found.blocks
        batch, rows, cols, k = found.loops
        per_word = found.per_word
        groups = int(sch.get(k).extent) // 32
        split = next(s for s in self.SPLITS if groups % s == 0)
        sch.compute_inline(dequantize)
        col_block, tx = sch.split(cols, [None, self.COLS])
        ty, group, word, code = sch.split(k, [split, None, 32 // per_word, per_word])
        sch.reorder(batch, rows, col_block, tx, ty, group, word, code)
        partial = sch.rfactor(ty, 0)  # each invocation's sum over its part of K
        batch, rows, col_block, tx, ty, group, word, code = sch.get_loops(partial)
        sch.bind(sch.fuse(batch, rows), "blockIdx.y")
        sch.bind(col_block, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        sch.bind(ty, "threadIdx.y")
        sch.set_scope(partial, 0, "local")
        packed, group_params = _weight_reads(sch, partial)
        sch.compute_at(sch.cache_read(partial, packed, "local"), word)
        for index in group_params:
            sch.compute_at(sch.cache_read(partial, index, "local"), group)
        sch.decompose_reduction(partial, group)
        sch.unroll(code)
        sch.reverse_compute_at(main, tx)  # the cross-thread sum, over threadIdx.y
        sch.bind(sch.get_loops(main)[-1], "threadIdx.y")
        for epilogue in epilogues:  # (every invocation of the column has the sum: they write the same value)
            sch.set_scope(main, 0, "local")
            sch.reverse_compute_at(epilogue, tx)
        return sch


class CpuDequantMatmul(dl.ScheduleRule):
    """CPU schedule for the same `x[1, n, K] @ dequantize(W)[O, K].T` (+ epilogue), any n.

    The packed layout puts neighbouring output columns in neighbouring words, so the vector unit works
    across LANES columns at once: for each k it loads LANES words (one cache line), decodes LANES weights
    and adds x[k] times them into LANES accumulators; no horizontal sums. Threads take blocks of columns.
    Prefill first decodes a block's LANES x K weights once, onto the stack, then runs ROWS rows at a time
    over them. Its row count is padded to a multiple of ROWS (a padded copy of x in, of the result out),
    so the unrolled rows carry no bounds check.
    """

    # Measured here (2 cores, SmolLM2-135M q4f32_1, 64-token prefill): decode 49 tokens/s, prefill 125;
    # prefill with the weights decoded per k (not once per block) 80, with 4 rows at a time 107.
    # Padding the rows (x86 limited to 128-bit vectors, one thread, 549 x 576 @ 576 x 3072): 85 ms -> 44.
    LANES, ROWS = 16, 8

    def apply(self, func, target, tunable):
        if target.kind.name != "llvm":
            return None
        if (found := _match(func)) is None:
            return None
        sch, (dequantize, main, epilogues) = found.sch, found.blocks
        batch, rows, cols, k = found.loops
        if not _is_one(sch, rows):
            sch.pad_einsum(main, [1, self.ROWS, 1, 1])
            batch, rows, cols, k = sch.get_loops(main)
        col_out, col_in = sch.split(cols, [None, self.LANES])
        sch.parallel(col_out)  # (before blocks move under it: parallel wants a plain subtree)
        # k as (packed word, code in the word): the LANES words are loaded once for all their codes.
        word, code = sch.split(k, [None, found.per_word])
        if _is_one(sch, rows):  # decode: the dequantize goes straight into the multiply-add
            sch.reorder(col_out, batch, rows, word, code, col_in)
            outer = col_out
            sch.compute_inline(dequantize)
        else:
            row_out, row_in = sch.split(rows, [None, self.ROWS])
            sch.reorder(col_out, batch, row_out, word, code, row_in, col_in)
            outer = row_out
            sch.compute_at(dequantize, col_out)
            sch.set_scope(dequantize, 0, "local")
            sch.transform_layout(dequantize, ("write", 0), lambda o, k: (k, o))  # a row of LANES per k
            sch.reorder(*reversed(sch.get_loops(dequantize)[-2:]))  # k outside, its LANES columns inside
            sch.vectorize(sch.get_loops(dequantize)[-1])
            sch.unroll(row_in)
        sch.unroll(code)
        accumulate = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(accumulate, outer)
        for epilogue in epilogues:  # e.g. the residual add, on each result as it is written back
            sch.reverse_compute_inline(epilogue)
        sch.vectorize(sch.get_loops(main)[-1])
        sch.vectorize(sch.get_loops(accumulate)[-1])
        sch.decompose_reduction(main, word)
        return sch


class CpuFactoredGemv(dl.ScheduleRule):
    """CPU schedule for decode's factored form (group_quant.dequantize_gemv_te, + epilogue): threads take
    blocks of LANES columns; for each group, the LANES columns' sums over the group's codes are computed
    (each packed word loaded once for its codes, one vector of columns at a time), then scaled into
    LANES accumulators. The sums of x per group and x scaled per code stay outside: K values.

    LANES is wide because a block reads a LANES-word stretch of each packed row, and rows lie a whole
    matrix width apart: 64 columns read 256 contiguous bytes per row, which the memory system streams;
    16 read one cache line from each row, a page apart.
    """

    # Measured here (x86 limited to 128-bit vectors as wasm SIMD is, one thread): SmolLM2-135M's
    # 576 x 1536 from cache 68 us against CpuDequantMatmul's 116; its 8-bit LM head (576 x 49152, from
    # memory) 3.4 ms with 64 columns, 11.6 with 16; the whole decode step 29 ms with 64, 44 with 16.
    LANES = 64

    def apply(self, func, target, tunable):
        if target.kind.name != "llvm" or not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        if not all(_has_block(sch, name) for name in ("group_dot", "dequantize_gemv")):
            return None
        main, group_dot = sch.get_sblock("dequantize_gemv"), sch.get_sblock("group_dot")
        epilogues = sch.get_consumers(main)
        *lead, cols, group = sch.get_loops(main)
        groups = int(sch.get(group).extent)
        col_out, col_in = sch.split(cols, [None, self.LANES])
        sch.parallel(col_out)
        sch.reorder(col_out, *lead, group, col_in)
        sch.compute_at(group_dot, group)
        sch.set_scope(group_dot, 0, "local")
        dot_cols, j = sch.get_loops(group_dot)[-2:]
        word, code = sch.split(j, [None, _codes_per_word(sch, group_dot, groups)])
        sch.reorder(word, code, dot_cols)
        sch.vectorize(dot_cols)
        sch.unroll(code)
        sch.decompose_reduction(group_dot, word)
        accumulate = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(accumulate, col_out)
        for epilogue in epilogues:
            sch.reverse_compute_inline(epilogue)
        sch.vectorize(sch.get_loops(main)[-1])
        sch.vectorize(sch.get_loops(accumulate)[-1])
        sch.decompose_reduction(main, group)
        return sch


def _codes_per_word(sch, block, groups: int) -> int:
    """Codes per packed uint32 word that `block` reads (8 for 4-bit weights, 4 for 8-bit), from the
    packed array's rows and the weight's groups of 32."""
    packed = next(r.source for r in sch.get(block).reads if r.source.dtype == "uint32")
    return 32 * groups // int(packed.shape[0])


@dataclass
class _DequantMatmul:
    """A dequantize-matmul's schedule: its blocks (dequantize, matmul, epilogues), the matmul's loops
    (batch, rows, columns, k) and the codes per packed word (8 for 4-bit weights, 4 for 8-bit)."""
    sch: s_tir.Schedule
    blocks: tuple
    loops: list
    per_word: int


def _match(func) -> _DequantMatmul | None:
    """The schedule of `func` when it is a dequantize-matmul (group_quant.dequantize_matmul_te, plus what
    Relax fused after it), else None."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root")) if _has_block(sch, "root") else []
    if [sch.get(b).name_hint for b in blocks][:2] != ["dequantize", "dequantize_matmul"]:
        return None
    loops = sch.get_loops(blocks[1])
    if len(loops) != 4:
        return None
    packed = sch.get(blocks[0]).reads[0].source  # (TVM 0.27 names a read's buffer `source`)
    per_word = int(sch.get(loops[3]).extent) // int(packed.shape[0])
    return _DequantMatmul(sch, (blocks[0], blocks[1], blocks[2:]), loops, per_word)


def _is_one(sch, loop) -> bool:
    extent = sch.get(loop).extent
    return isinstance(extent, tirx.IntImm) and extent.value == 1


def _weight_reads(sch, block) -> tuple[int, list[int]]:
    """Indices, among `block`'s reads, of the packed codes (uint32) and of the per-group scale and minimum."""
    reads = [r.source for r in sch.get(block).reads]
    packed = next(i for i, b in enumerate(reads) if b.dtype == "uint32")
    groups = [i for i, b in enumerate(reads) if i != packed and len(b.shape) == 2
              and b.shape[1] == reads[packed].shape[1]]
    return packed, groups


def _has_block(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - tvm raises its own error type for a missing block
        return False


def rules(kernels: str) -> list:
    """The rules of one WebGPU kernel set (KERNEL_SETS), most specific first."""
    quantized = {"software": [SoftwareDequantMatmul()], "gpu": [GpuDequantGemv()]}[kernels]
    # dl.gpu.RMSNorm is left out on purpose: it emits 8-lane vectors that WGSL codegen rejects.
    return quantized + [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(),
                        dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def cpu_rules() -> list:
    return [CpuFactoredGemv(), CpuDequantMatmul()]


@module_pass(opt_level=0, name="SeamApplySchedules")
class ApplySchedules:
    """Like dlight.ApplyDefaultSchedule, but fills `report` with kernel name -> rule name."""

    def __init__(self, report: dict[str, str], rules: list):
        self.report = report
        self.rules = rules

    def transform_module(self, mod, _ctx):
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                continue
            target = func.attrs.get("target") or Target.current(allow_none=False)
            for rule in self.rules:
                space = rule.apply(func, target, False)
                if space is None:
                    continue
                sch = space[0] if isinstance(space, list) else space
                updated[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                self.report[gvar.name_hint] = type(rule).__name__
                break
            else:
                self.report[gvar.name_hint] = "unscheduled"
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

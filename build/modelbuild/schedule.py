"""GPU schedules for every kernel (and the CPU one for the quantized matmuls), and a record of which
schedule each kernel got.

DLight's rules cover most kernels: Reduction/GeneralReduction for norms and softmax, Matmul for plain
float matmuls, GEMV for plain matrix-vector products. What DLight cannot schedule falls to its Fallback
rule (one thread per output, no reuse), which is fine for small elementwise kernels but slow for a
matmul. The matmuls with a fused 4-bit dequantize (prefill with dynamic length, and decode's one row)
get our own rule first: DLight's GEMV would take the decode ones, but its workgroup reductions use
barriers, which the software adapters run 3-9x slower (measured: the lm_head 3.06 s vs 0.68 s).
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.transform import module_pass
from tvm.s_tir import dlight as dl
from tvm.target import Target


class DequantMatmul(dl.ScheduleRule):
    """Register-tiled schedule for `x[1, n, K] @ dequantize(W)[O, K].T` (+ elementwise epilogue), for a
    dynamic n (prefill, ROWS rows per thread) or n == 1 (decode, one row per thread).

    Each thread accumulates a ROWS x COLS tile of the output in registers, reading each packed weight
    word once per ROWS rows and each activation once per COLS columns. There are no workgroup
    barriers: on the software adapters here barriers cost 3-9x, and on real GPUs the register tile
    already gives the reuse that makes prefill compute-bound rather than load-bound.
    """

    # Measured on SwiftShader for 19x576 @ 576x3072: 0.52 s, vs 0.84 s with the tile in indexed private
    # arrays (not unrolled) and more with DLight's Fallback. Only the 4-wide tile loops are unrolled:
    # unrolling the K loop too made SwiftShader's shader compiler hang.
    ROWS, COLS, THREADS, K_TILE = 4, 4, 64, 32

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root")) if _has_block(sch, "root") else []
        names = [sch.get(b).name_hint for b in blocks]
        if names[:2] != ["dequantize", "dequantize_matmul"]:
            return None
        dequantize, main = blocks[0], blocks[1]
        loops = sch.get_loops(main)
        if len(loops) != 4:
            return None
        batch, rows, cols, k = loops
        row_extent = sch.get(rows).extent
        if isinstance(row_extent, tirx.IntImm) and row_extent.value != 1:
            return None
        row_out, row_in = sch.split(rows, [None, 1 if isinstance(row_extent, tirx.IntImm) else self.ROWS])
        col_out, col_thread, col_in = sch.split(cols, [None, self.THREADS, self.COLS])
        k_out, k_in = sch.split(k, [None, self.K_TILE])
        sch.reorder(batch, row_out, col_out, col_thread, k_out, k_in, row_in, col_in)
        sch.bind(sch.fuse(batch, row_out), "blockIdx.y")
        sch.bind(col_out, "blockIdx.x")
        sch.bind(col_thread, "threadIdx.x")
        accumulate = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(accumulate, col_thread)
        # Dequantize one weight per column for each k, into registers, shared by all ROWS rows.
        sch.compute_at(dequantize, k_in)
        sch.set_scope(dequantize, 0, "local")
        for epilogue in blocks[2:]:  # e.g. the residual add: applied while writing the tile back
            sch.reverse_compute_inline(epilogue)
        init = sch.decompose_reduction(main, k_out)
        # Unroll the small tile loops so the tile lives in registers, not in indexed private memory:
        # every loop under the thread loop except the K loops. (Picked by identity, not position: with
        # one row, the row loops vanish, and unrolling by position once unrolled the thread loop itself.)
        same = lambda a, b: sch.get_sref(a).same_as(sch.get_sref(b))  # noqa: E731 - srefs survive rewrites
        for block in (init, main, dequantize, accumulate):
            loops = sch.get_loops(block)
            below = [i for i, loop in enumerate(loops) if same(loop, col_thread)][0] + 1
            for loop in loops[below:]:
                if not (same(loop, k_out) or same(loop, k_in)):
                    sch.unroll(loop)
        return sch


class CpuDequantMatmul(dl.ScheduleRule):
    """CPU schedule for the same `x[1, n, K] @ dequantize(W)[O, K].T` (+ epilogue), any n.

    Unscheduled, TVM materializes the whole dequantized matrix in float32 on every call (113 MB for the
    lm_head, per token) and runs one thread. Here the output columns are split across threads; each
    column's weights are dequantized once into a K-long row on the stack, shared by all n rows (for
    decode's one row, straight into the dot product instead), and each dot product runs LANES-wide: a
    partial sum per lane (rfactor), so LLVM emits SIMD without reordering a float reduction it may not.
    """

    # Measured here (AVX-512, 2 threads), lm_head 49152x576 per token: 9.5 ms with 8 lanes and the row
    # dequantized to the stack, 3.5 ms with 16 lanes and (decode) the dequantize inlined into the dot.
    LANES = 16

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root")) if _has_block(sch, "root") else []
        if [sch.get(b).name_hint for b in blocks][:2] != ["dequantize", "dequantize_matmul"]:
            return None
        dequantize, main = blocks[0], blocks[1]
        if len(sch.get_loops(main)) != 4:
            return None
        batch, rows, cols, k = sch.get_loops(main)
        sch.reorder(cols, batch, rows, k)
        k_out, k_in = sch.split(k, [None, self.LANES])
        partial = sch.rfactor(k_in, 0)  # (must precede compute_at: it wants the reduction first)
        cols, batch, rows, k_out, k_in = sch.get_loops(partial)
        sch.vectorize(k_in)
        sch.reverse_compute_at(main, rows)  # per (column, row): sum the lanes
        for epilogue in blocks[2:]:  # e.g. the residual add, on each sum as it is done
            sch.reverse_compute_at(epilogue, rows)
        if isinstance(sch.get(rows).extent, tirx.IntImm):  # decode: one row, nothing to share
            sch.compute_inline(dequantize)
        else:
            sch.compute_at(dequantize, cols)
            sch.vectorize(sch.split(sch.get_loops(dequantize)[-1], [None, self.LANES])[1])
        sch.parallel(cols)
        return sch


def _has_block(sch, name: str) -> bool:
    try:
        sch.get_sblock(name)
        return True
    except Exception:  # noqa: BLE001 - tvm raises its own error type for a missing block
        return False


def default_rules() -> list:
    # dl.gpu.RMSNorm is left out on purpose: it emits 8-lane vectors that WGSL codegen rejects.
    return [DequantMatmul(), dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def cpu_rules() -> list:
    return [CpuDequantMatmul()]


@module_pass(opt_level=0, name="SeamApplySchedules")
class ApplySchedules:
    """Like dlight.ApplyDefaultSchedule, but fills `report` with kernel name -> rule name."""

    def __init__(self, report: dict[str, str], rules: list | None = None):
        self.report = report
        self.rules = rules if rules is not None else default_rules()

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

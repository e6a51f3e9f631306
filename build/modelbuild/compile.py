"""Compile a model for WebGPU (a `.wasm` for tvmjs) and for the server's CPU (a shared library).

Both pipelines are TVM's generic ones with the schedule step replaced by ours (schedule.py), so that
we decide, and report, which schedule every kernel gets.
"""
from __future__ import annotations

import math
import re

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.backend.gpu_generic import pipeline as gpu_generic

from modelbuild import schedule
from modelbuild.arch import Architecture
from modelbuild.cpu_attention import use_cpu_attention
from modelbuild.gpu_attention import use_gpu_attention
from modelbuild.quantization import quantize_model


def export(arch: Architecture, config, preset, target: tvm.target.Target, eight_bit: set[str] = frozenset()):
    """The model as a Relax module, and (name, shape, dtype) of each parameter in the order it is taken.
    `eight_bit`: the modules whose weights stay in 8 bits (where the source holds them so)."""
    model = quantize_model(arch.model(config, target), preset, eight_bit, cpu=target.kind.name == "llvm")
    mod, params = model.export_tvm(spec=model.get_default_spec())
    return mod, [(name, tuple(int(d) for d in p.shape), p.dtype) for name, p in params]


def pipeline(backend, target: tvm.target.Target, rules: list, report: dict[str, str], after: tuple = ()):
    """TVM's generic pipeline for `backend` (gpu_generic or cpu_generic) with its schedule step replaced by
    ours, then the passes in `after`. (CPU's legalize passes are the GPU's without DLight's default
    schedule, so both use them.)"""
    @tvm.transform.module_pass(opt_level=0, name="SeamPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        passes = (backend.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
                  + [schedule.ApplySchedules(report, rules)]
                  + backend.dataflow_lower_passes(target) + backend.finalize_passes(target) + list(after))
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_webgpu(mod: tvm.ir.IRModule, target: tvm.target.Target, kernels: str):
    """One kernel set (schedule.KERNEL_SETS) of the model: the executable and, per kernel, the name of the
    schedule it got."""
    report: dict[str, str] = {}
    executable = tvm.compile(use_gpu_attention(mod), target=target,
                             relax_pipeline=pipeline(gpu_generic, target, schedule.rules(kernels), report))
    return executable, report


def compile_cpu(mod: tvm.ir.IRModule, target: tvm.target.Target):
    """TVM's CPU pipeline with our schedule for the quantized matmuls (the rest stays as TVM emits it)."""
    report: dict[str, str] = {}  # (the schedule pass fills it; the CPU build has no use for it yet)
    relax_pipeline = pipeline(cpu_generic, target, schedule.cpu_rules(), report, after=(mark_no_alias,))
    return tvm.compile(use_cpu_attention(mod), target=target, relax_pipeline=relax_pipeline)


@tvm.transform.module_pass(opt_level=0, name="SeamMarkNoAlias")
def mark_no_alias(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
    """Every kernel's buffers are declared not to overlap ("tirx.noalias"). TVM 0.27's LLVM codegen applies
    the flag of the module's last kernel (by name) to the bodies of all of them: its KV-cache kernels,
    written without the flag, sort last, so every kernel lost it, and with it the alias information that
    lets LLVM keep a matmul's accumulators in registers (measured: 549 x 576 @ 576 x 3072 took 77 ms
    instead of 44). Their parameters are distinct tensors (in-place kernels update one parameter), as the
    kernels built from tensor expressions already declare."""
    updated = {gvar: func.with_attr("tirx.noalias", True) for gvar, func in mod.functions_items()
               if isinstance(func, tvm.tirx.PrimFunc) and not func.attrs.get("tirx.noalias")}
    for gvar, func in updated.items():
        mod[gvar] = func
    return mod


def wgsl_source(executable) -> str:
    """The WGSL of every kernel, for inspection and for sizing the adapter requirements."""
    for module in executable.mod.imports[0].imports if executable.mod.imports else []:
        if module.kind == "webgpu":
            return module.inspect_source()
    return ""


WGSL_BYTES = {"f32": 4, "i32": 4, "u32": 4, "f16": 2}


def workgroup_needs(wgsl: str) -> dict:
    """The largest workgroup (invocations) and workgroup memory (bytes) any kernel asks for: the limits
    an adapter must allow for this kernel set. The WGSL holds one module per kernel ("// Function:")."""
    invocations, storage = 1, 0
    for module in re.split(r"^// Function: .*$", wgsl, flags=re.MULTILINE):
        for size in re.findall(r"@workgroup_size\(([^)]*)\)", module):
            invocations = max(invocations, math.prod(int(d) for d in size.split(",") if d.strip()))
        arrays = re.findall(r"var<workgroup>\s*\w+\s*:\s*array<(?:vec(\d)<)?(\w+)>?,\s*(\d+)>", module)
        storage = max(storage, sum(int(lanes or 1) * WGSL_BYTES.get(scalar, 4) * int(n) for lanes, scalar, n in arrays))
    return {"max_invocations_per_workgroup": invocations, "max_workgroup_storage_bytes": storage}


"""Compile a model for WebGPU (a `.wasm` for tvmjs) and for the server's CPU (a shared library).

Both pipelines are TVM's generic ones with the schedule step replaced by ours (schedule.py), so that
we decide, and report, which schedule every kernel gets.
"""
from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.backend.gpu_generic import pipeline as gpu_generic

from modelbuild import schedule
from modelbuild.arch import Architecture
from modelbuild.quantization import quantize_model


def export(arch: Architecture, config, preset, target: tvm.target.Target):
    """The model as a Relax module, and (name, shape, dtype) of each parameter in the order it is taken."""
    model = quantize_model(arch.model(config, target), preset)
    mod, params = model.export_tvm(spec=model.get_default_spec())
    return mod, [(name, tuple(int(d) for d in p.shape), p.dtype) for name, p in params]


def pipeline(backend, target: tvm.target.Target, rules: list, report: dict[str, str]):
    """TVM's generic pipeline for `backend` (gpu_generic or cpu_generic) with its schedule step replaced by
    ours. (CPU's legalize passes are the GPU's without DLight's default schedule, so both use them.)"""
    @tvm.transform.module_pass(opt_level=0, name="SeamPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        passes = (backend.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
                  + [schedule.ApplySchedules(report, rules)]
                  + backend.dataflow_lower_passes(target) + backend.finalize_passes(target))
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_webgpu(mod: tvm.ir.IRModule, target: tvm.target.Target):
    """Returns the executable and, per kernel, the name of the schedule it got."""
    report: dict[str, str] = {}
    executable = tvm.compile(mod, target=target,
                             relax_pipeline=pipeline(gpu_generic, target, schedule.default_rules(), report))
    return executable, report


def compile_cpu(mod: tvm.ir.IRModule, target: tvm.target.Target):
    """TVM's CPU pipeline with our schedule for the quantized matmuls (the rest stays as TVM emits it)."""
    report: dict[str, str] = {}  # (the schedule pass fills it; the CPU build has no use for it yet)
    return tvm.compile(mod, target=target, relax_pipeline=pipeline(cpu_generic, target, schedule.cpu_rules(), report))


def wgsl_source(executable) -> str:
    """The WGSL of every kernel, for inspection and for sizing the adapter requirements."""
    for module in executable.mod.imports[0].imports if executable.mod.imports else []:
        if module.kind == "webgpu":
            return module.inspect_source()
    return ""

"""Compile a model for WebGPU (a `.wasm` for tvmjs) and for the server's CPU (a shared library).

The GPU pipeline is TVM's generic one with the schedule step replaced by ours (schedule.py), so that
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


def gpu_pipeline(target: tvm.target.Target, report: dict[str, str]):
    @tvm.transform.module_pass(opt_level=0, name="SeamGPUPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        passes = (gpu_generic.library_dispatch_passes(target)
                  + [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                     relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
                     schedule.ApplySchedules(report)]
                  + gpu_generic.dataflow_lower_passes(target) + gpu_generic.finalize_passes(target))
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_webgpu(mod: tvm.ir.IRModule, target: tvm.target.Target):
    """Returns the executable and, per kernel, the name of the schedule it got."""
    report: dict[str, str] = {}
    executable = tvm.compile(mod, target=target, relax_pipeline=gpu_pipeline(target, report))
    return executable, report


def cpu_pipeline(target: tvm.target.Target, report: dict[str, str]):
    @tvm.transform.module_pass(opt_level=0, name="SeamCPUPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        passes = (cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
                  + [schedule.ApplySchedules(report, schedule.cpu_rules())]
                  + cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target))
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def compile_cpu(mod: tvm.ir.IRModule, target: tvm.target.Target):
    """TVM's CPU pipeline with our schedule for the quantized matmuls (the rest stays as TVM emits it)."""
    report: dict[str, str] = {}  # (the schedule pass fills it; the CPU build has no use for it yet)
    return tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target, report))


def wgsl_source(executable) -> str:
    """The WGSL of every kernel, for inspection and for sizing the adapter requirements."""
    for module in executable.mod.imports[0].imports if executable.mod.imports else []:
        if module.kind == "webgpu":
            return module.inspect_source()
    return ""

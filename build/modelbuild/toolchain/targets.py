"""The two places a model runs: WebGPU with a wasm32 host (the browser), and the server's CPU.

TVM 0.27 takes targets as JSON-style dicts only; the old string form raises.
"""
import tvm

WASM_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}


def webgpu() -> tvm.target.Target:
    return tvm.target.Target({"kind": "webgpu", "host": WASM_HOST})


def cpu() -> tvm.target.Target:
    """The server's CPU. The library is built and served on the same machine, so tune for it."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})

"""The places a model runs: WebGPU with a wasm32 host (the browser), the browser's CPU (wasm32 with
SIMD), and the server's CPU.

TVM 0.27 takes targets as JSON-style dicts only; the old string form raises.
"""
import tvm

WASM_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}


def webgpu() -> tvm.target.Target:
    return tvm.target.Target({"kind": "webgpu", "host": WASM_HOST})


def wasm_cpu() -> tvm.target.Target:
    """The browser's CPU: WebAssembly with its 128-bit SIMD, which every current browser has, and atomics
    and bulk memory, so that the same code links into both CPU builds: one thread (TVM's web runtime runs
    a parallel loop's tasks one after another) and threads over a shared memory (wasm_link.THREADS_FLAGS).
    The kernels use no atomic instruction themselves; the features only allow the shared memory."""
    return tvm.target.Target({**WASM_HOST, "mattr": ["+simd128", "+atomics", "+bulk-memory"]})


def cpu() -> tvm.target.Target:
    """The server's CPU. The library is built and served on the same machine, so tune for it."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})

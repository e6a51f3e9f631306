"""Toolchain self-test: one small Relax module, compiled for WebGPU+wasm and for the CPU, against numpy.

Tolerance: max |out - ref| <= 1e-4 * max |ref|, on float32 outputs against a float64 reference.
float32 rounding over a 128-term dot product, WGSL's inverseSqrt (2 ULP) and a different summation
order give errors of 3.8e-7 of the output scale (measured, on the CPU and on SwiftShader alike); a real
defect (a wrong code, scale group, shift or stride) moves outputs by 1e-2 or more.
"""
import shutil

import numpy as np
import pytest
import tvm
from tvm import relax

from modelbuild.toolchain import targets
from modelbuild.toolchain.wasm_link import WasmLinker
from tests.support import selftest_model as model
from tests.support.repo import TVMJS

RTOL = 1e-4
SEQ_LENS = (7, 1, 33)  # prefill-like, decode-like, and a length that is not a multiple of any tile


@pytest.fixture(scope="module")
def case():
    mod, param_names = model.export()
    weights = model.make_weights()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, n, model.HIDDEN)).astype(np.float32) for n in SEQ_LENS]
    return mod, [weights[name] for name in param_names], inputs, [model.reference(x, weights) for x in inputs]


def assert_close(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape
    err = np.abs(out - ref).max()
    assert err <= RTOL * np.abs(ref).max(), f"max error {err:.3g} for outputs of scale {np.abs(ref).max():.3g}"


def test_cpu_library_matches_numpy(case):
    mod, weights, inputs, refs = case
    vm = relax.VirtualMachine(tvm.compile(mod, target=targets.cpu()), tvm.cpu())
    params = [tvm.runtime.tensor(w) for w in weights]
    for x, ref in zip(inputs, refs):
        assert_close(vm["forward"](tvm.runtime.tensor(x), *params).numpy(), ref)


def test_webgpu_wasm_in_chromium_matches_numpy(case, page, serve_folder, tmp_path):
    mod, weights, inputs, refs = case
    executable = tvm.compile(mod, target=targets.webgpu())
    executable.export_library(str(tmp_path / "selftest.wasm"), fcompile=WasmLinker())
    shutil.copy(TVMJS, tmp_path / "tvmjs.js")
    shutil.copy(model.__file__.replace("selftest_model.py", "selftest.html"), tmp_path / "selftest.html")
    page.goto(serve_folder(tmp_path) + "selftest.html")

    as_js = lambda a: {"shape": list(a.shape), "dtype": str(a.dtype), "values": a.ravel().tolist()}
    result = page.evaluate("runSelfTest", {"wasmUrl": "selftest.wasm", "weights": [as_js(w) for w in weights],
                                           "inputs": [as_js(x) for x in inputs]})

    assert result["adapter"], "the page ran without naming its WebGPU adapter"
    for out, ref in zip(result["outputs"], refs):
        assert_close(np.array(out["values"], np.float32).reshape(out["shape"]), ref)

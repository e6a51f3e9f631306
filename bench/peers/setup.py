"""Sets up the peers `make bench` compares against, from the registries only, cached under
$SEAM_CACHE/bench (default ~/.cache/seam/bench). Each step is redone only when its stamp is missing, and
a step that fails is reported (the bench table shows the error) while the others go on.

1. transformers.js: the npm tarballs of @huggingface/transformers (its self-contained browser bundle) and
   of the onnxruntime-web build it pins (the wasm files the bundle would fetch from a CDN).
2. The ONNX model: the default GGUF as a Hugging Face folder (hf_folder.py), exported to ONNX by
   optimum-onnx and quantized to 4 bits (onnx_export.py) in a venv of its own.
3. llama.cpp: llama-cpp-python built from its sdist, in a venv of its own (llama_cpp_runner.py runs there).
4. wllama: the npm tarball of @wllama/wllama (llama.cpp compiled to wasm, its ES module and wasm).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SEAM_CACHE", Path.home() / ".cache" / "seam")) / "bench"
TRANSFORMERS_JS = "@huggingface/transformers@4.3.2"
ONNXRUNTIME_WEB = "onnxruntime-web@1.31.0-dev.20260914-8d85527a0"  # what transformers.js 4.3.2 pins
EXPORT_PACKAGES = ["optimum-onnx[onnxruntime]==0.1.0", "transformers==4.57.6", "torch==2.13.0", "onnx-ir",
                   "ml_dtypes"]
LLAMA_CPP_PACKAGE = "llama-cpp-python==0.3.36"
WLLAMA = "@wllama/wllama@3.8.1"


@dataclass
class Peer:
    name: str
    ready: bool
    error: str = ""
    paths: dict | None = None


def say(message: str) -> None:
    print(f"[bench setup] {message}", flush=True)


def step(name: str, stamp: Path, work) -> str:
    """Runs `work()` unless `stamp` says it was done; returns "" or the error."""
    if stamp.exists():
        say(f"{name}: cached")
        return ""
    say(f"{name}: setting up ...")
    try:
        work()
    except Exception as error:  # any failure becomes a line in the table, not a stopped bench
        say(f"{name}: FAILED: {error}")
        return f"{name}: {error}"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text("done\n")
    say(f"{name}: done")
    return ""


def run(*command, **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`{' '.join(map(str, command[:4]))} ...` failed: {' / '.join(tail)}")


def npm_unpack(spec: str, folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run("npm", "pack", "--silent", spec, cwd=tmp)
        (tarball,) = Path(tmp).glob("*.tgz")
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(folder, filter="data")


def venv(folder: Path, packages: list[str], env: dict | None = None) -> Path:
    run(sys.executable, "-m", "venv", str(folder))
    run(str(folder / "bin" / "pip"), "install", "-q", *packages, env={**os.environ, **(env or {})})
    return folder / "bin" / "python"


def transformers_js() -> Peer:
    folder = CACHE / "transformers-js"
    error = step("transformers.js (npm)", folder / ".done", lambda: (
        npm_unpack(TRANSFORMERS_JS, folder / "transformers"), npm_unpack(ONNXRUNTIME_WEB, folder / "ort")))
    return Peer("transformers.js", not error, error, {"bundle": folder / "transformers" / "package" / "dist",
                                                      "ort": folder / "ort" / "package" / "dist"})


def onnx_model(gguf: Path) -> Peer:
    from modelbuild.source import sha256_files

    from bench.peers.hf_folder import write_hf_folder

    model = CACHE / "onnx" / sha256_files([gguf])[:16] / "SmolLM2-135M-Instruct"
    python = CACHE / "export-venv" / "bin" / "python"

    def export():
        if not python.exists():
            venv(CACHE / "export-venv", EXPORT_PACKAGES)
        with tempfile.TemporaryDirectory() as tmp:
            hf = write_hf_folder(gguf, Path(tmp) / "hf")
            run(str(python), str(HERE / "onnx_export.py"), str(hf), str(model), env={**os.environ, "HF_HUB_OFFLINE": "1"})

    error = step("ONNX export, 4-bit (optimum-onnx, onnxruntime)", model / ".done", export)
    return Peer("onnx model", not error, error, {"model": model})


def llama_cpp() -> Peer:
    folder = CACHE / "llama-cpp-venv"
    # AVX2/FMA/F16C, not -march=native: the CI machines' CPUs report AMX, and a native build died there
    # with "Illegal instruction" (the VM does not let processes use the AMX tiles). OpenMP on, BLAS off
    # (no gain for a 135M model), no multimodal tools.
    flags = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
    build = {"CMAKE_ARGS": flags, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count())}
    error = step("llama-cpp-python (built from its sdist, 10-20 min)", folder / ".done",
                 lambda: venv(folder, ["--no-cache-dir", "--no-binary", "llama-cpp-python", LLAMA_CPP_PACKAGE], build))
    return Peer("llama.cpp", not error, error, {"python": folder / "bin" / "python",
                                                "runner": HERE / "llama_cpp_runner.py"})


def wllama() -> Peer:
    folder = CACHE / "wllama"
    error = step("wllama (npm)", folder / ".done", lambda: npm_unpack(WLLAMA, folder))
    return Peer("wllama", not error, error, {"esm": folder / "package" / "esm"})

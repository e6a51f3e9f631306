"""TVM's web runtime (wasm runtime, WebGPU runtime, tvmjs support), compiled once and cached.

Every model `.wasm` links three runtime objects: TVM's `web/emcc/*.cc` unity builds compiled with
emscripten. The apache-tvm wheel ships those sources but not all the headers they include, so we
assemble a TVM source root from:
  - the apache-tvm wheel (include/, src/runtime, web/emcc) and the apache-tvm-ffi wheel (its C++ API);
  - `include/tvm/support/{io,serializer}.h` and `src/support/bytes_io.h` from the apache-tvm-tirx wheel;
  - the other `src/support/*.h` from the tilelang wheel, which vendors a TVM tree;
  - our own `builtin_fp16.h` and a no-op `nvtx.h` (toolchain/include/).
The objects are compiled straight to wasm object files (not LLVM bitcode): TVM emits LLVM-22 code
that Debian's wasm-ld 14 cannot read as bitcode, and precompiled objects let a model link in seconds
instead of running LTO over 16 MB of runtime bitcode each time.

Two flavors: "single" is TVM's runtime as it is (one thread; every browser with wasm SIMD), "threads" is
compiled with wasm atomics and runs TVM's parallel loops on helper threads over a shared memory
(include/seam/wasm_threads.h replaces TVM's serial parallel launch; see docs/page-and-browsers.md).

The cache key is the TVM and tvm-ffi versions plus a hash of the flavor's headers and flags. A build
happens in a temporary folder next to the cache and is moved into place only when all three objects exist.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

from modelbuild.errors import ToolchainError

OWN_HEADERS = Path(__file__).with_name("include")
RUNTIME_UNITS = ("wasm_runtime", "tvmjs_support", "webgpu_runtime")
CFLAGS = ["-O3", "-std=c++17", "-Wno-ignored-attributes"]
FLAVORS = {"single": [], "threads": ["-matomics", "-mbulk-memory"]}  # flavor -> its extra compiler flags

# The threads flavor's edits of TVM's sources: (file in the source root, TVM's text, ours). Each must match
# once, so that a TVM update that moves them fails the build instead of running serially or unlocked.
SERIAL_LAUNCH = """int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  TVMParallelGroupEnv env;
  env.num_task = 1;
  flambda(0, &env, cdata);
  return 0;
}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) { return 0; }
"""
THREADS_EDITS = (
    ("web/emcc/wasm_runtime.cc", SERIAL_LAUNCH, ""),
    ("web/emcc/wasm_runtime.cc", '#include "src/runtime/cpu_device_api.cc"',
     '#include "seam/wasm_threads.h"\n#include "src/runtime/cpu_device_api.cc"'),
    ("src/runtime/cpu_device_api.cc", "  return CPUWorkspacePoolThreadLocal()->AllocWorkspace(dev, size);",
     "  seam::HeapLock lock;\n  return CPUWorkspacePoolThreadLocal()->AllocWorkspace(dev, size);"),
    ("src/runtime/cpu_device_api.cc", "  CPUWorkspacePoolThreadLocal()->FreeWorkspace(dev, data);",
     "  seam::HeapLock lock;\n  CPUWorkspacePoolThreadLocal()->FreeWorkspace(dev, data);"),
)

# Wheels that carry headers the apache-tvm wheel leaves out. Only the listed members are used.
HEADER_WHEELS = {
    "apache-tvm-tirx": "0.1.0a4",
    "tilelang": "0.1.15",
}
TIRX_HEADERS = {  # member in the wheel -> place in the TVM source root
    "tvm_tirx/include/tvm/support/io.h": "include/tvm/support/io.h",
    "tvm_tirx/include/tvm/support/serializer.h": "include/tvm/support/serializer.h",
    "tvm_tirx/include/tvm/support/bytes_io.h": "src/support/bytes_io.h",
}
TILELANG_SUPPORT_HEADERS = (
    "arena.h", "ring_buffer.h", "base64.h", "utils.h", "pipe.h", "socket.h", "ssize.h",
    "errno_handling.h", "limits.h", "str_escape.h", "env.h", "process_id.h",
)


def cache_root() -> Path:
    """Where expensive toolchain outputs live; shared by every clone on this machine."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seam"
    return Path(os.environ.get("SEAM_CACHE", default))


def own_headers(flavor: str) -> list[Path]:
    return [h for h in sorted(OWN_HEADERS.rglob("*.h")) if flavor == "threads" or "seam" not in h.parts]


def cache_key(flavor: str = "single") -> str:
    tvm_version = metadata.version("apache-tvm")
    ffi_version = metadata.version("apache-tvm-ffi")
    settings = [CFLAGS, HEADER_WHEELS] + ([FLAVORS[flavor], THREADS_EDITS] if flavor == "threads" else [])
    digest = hashlib.sha256(json.dumps(settings).encode())
    for header in own_headers(flavor):
        digest.update(header.read_bytes())
    name = f"tvm-{tvm_version}_ffi-{ffi_version}_{digest.hexdigest()[:10]}"
    return name if flavor == "single" else f"{name}_{flavor}"


def runtime_dir(flavor: str = "single") -> Path:
    return cache_root() / "web-runtime" / cache_key(flavor)


def runtime_objects(flavor: str = "single") -> list[Path]:
    """The cached runtime objects a model links against; fails with what to run if they are missing."""
    objects = [runtime_dir(flavor) / f"{unit}.o" for unit in RUNTIME_UNITS]
    missing = [str(o) for o in objects if not o.is_file()]
    if missing:
        raise ToolchainError(f"the TVM web runtime is not built ({', '.join(missing)} missing)",
                             "run `make setup` (or `python -m modelbuild runtime`)")
    return objects


def ensure_built(log=print) -> list[Path]:
    """Build each flavor's runtime objects unless the cache already has them; return the cache folders."""
    return [ensure_flavor_built(flavor, log) for flavor in FLAVORS]


def ensure_flavor_built(flavor: str, log=print) -> Path:
    target = runtime_dir(flavor)
    if (target / "BUILD_INFO.json").is_file():
        log(f"web runtime ({flavor}): already built ({target})")
        return target
    emcc = shutil.which("emcc")
    if emcc is None:
        raise ToolchainError("emcc not found", "run `make setup`, which installs Debian's emscripten package")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="building-", dir=target.parent) as tmp:
        started = time.time()
        root = assemble_source_root(Path(tmp) / "tvm_root", log)
        if flavor == "threads":
            apply_edits(root, THREADS_EDITS)
        out = Path(tmp) / "out"
        out.mkdir()
        cflags = CFLAGS + FLAVORS[flavor]
        compile_units(emcc, root, out, cflags, log)
        info = {"key": target.name, "emcc": emcc_version(emcc), "cflags": cflags,
                "seconds": round(time.time() - started, 1)}
        (out / "BUILD_INFO.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)
    log(f"web runtime ({flavor}): built in {info['seconds']}s ({target})")
    return target


def apply_edits(root: Path, edits) -> None:
    for name, theirs, ours in edits:
        path = root / name
        text = path.read_text()
        if text.count(theirs) != 1:
            raise ToolchainError(f"{name} of apache-tvm {metadata.version('apache-tvm')} does not have the code "
                                 f"the threads runtime replaces:\n{theirs}",
                                 "check THREADS_EDITS in build/modelbuild/toolchain/web_runtime.py against it")
        path.write_text(text.replace(theirs, ours))


def assemble_source_root(root: Path, log=print) -> Path:
    """Lay out the folders TVM's unity builds include from, using only wheels and our headers."""
    tvm_pkg = package_dir("tvm")
    ffi_pkg = package_dir("tvm_ffi")
    shutil.copytree(tvm_pkg / "include", root / "include")
    shutil.copytree(tvm_pkg / "src" / "runtime", root / "src" / "runtime")
    shutil.copytree(tvm_pkg / "web" / "emcc", root / "web" / "emcc", ignore=shutil.ignore_patterns("__pycache__"))
    ffi_root = root / "3rdparty" / "tvm-ffi"
    shutil.copytree(ffi_pkg / "include", ffi_root / "include")
    shutil.copytree(ffi_pkg / "src", ffi_root / "src")
    shutil.copytree(ffi_pkg / "3rdparty" / "dlpack" / "include", ffi_root / "3rdparty" / "dlpack" / "include")
    wheels = download_header_wheels(log)
    extract(wheels["apache-tvm-tirx"], TIRX_HEADERS, root)
    extract(wheels["tilelang"], {f"tilelang/3rdparty/tvm/src/support/{h}": f"src/support/{h}"
                                 for h in TILELANG_SUPPORT_HEADERS}, root)
    shutil.copytree(OWN_HEADERS / "tvm", root / "include" / "tvm", dirs_exist_ok=True)
    shutil.copytree(OWN_HEADERS / "seam", root / "include" / "seam")
    shutil.copytree(OWN_HEADERS / "compiler-rt", root / "3rdparty" / "compiler-rt")
    return root


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError(f"Python package {name!r} is not installed", "run `make setup`")
    return Path(spec.submodule_search_locations[0])


def download_header_wheels(log=print) -> dict[str, Path]:
    """Fetch (once) the wheels that carry missing headers, without installing them."""
    folder = cache_root() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, version in HEADER_WHEELS.items():
        pattern = f"{name.replace('-', '_')}-{version}-*.whl"
        hits = sorted(folder.glob(pattern))
        if not hits:
            log(f"web runtime: downloading header wheel {name}=={version}")
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                                   f"{name}=={version}", "-d", str(folder)], capture_output=True, text=True)
            hits = sorted(folder.glob(pattern))
            if proc.returncode != 0 or not hits:
                raise ToolchainError(f"pip could not download {name}=={version}: {proc.stderr.strip()[-500:]}",
                                     "check that PyPI is reachable, then rerun `make setup`")
        found[name] = hits[-1]
    return found


def extract(wheel: Path, members: dict[str, str], root: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member, dest in members.items():
            if member not in names:
                raise ToolchainError(f"{wheel.name} has no {member}", "the pinned header wheel changed; "
                                     "check HEADER_WHEELS in build/modelbuild/toolchain/web_runtime.py")
            path = root / dest
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zf.read(member))


def compile_units(emcc: str, root: Path, out: Path, cflags: list[str], log=print) -> None:
    """Compile the three unity builds to wasm objects, two at a time (the machines have two cores)."""
    includes = [f"-I{root}", f"-I{root / 'include'}", f"-I{root / '3rdparty/tvm-ffi/include'}",
                f"-I{root / '3rdparty/tvm-ffi/3rdparty/dlpack/include'}", f"-I{root / '3rdparty/compiler-rt'}"]

    def compile_one(unit: str) -> tuple[str, float]:
        started = time.time()
        cmd = [emcc, *includes, *cflags, "-c", str(root / "web" / "emcc" / f"{unit}.cc"), "-o", str(out / f"{unit}.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            log_path = out.parent.parent / f"{unit}.error.log"
            log_path.write_text(proc.stdout + proc.stderr)
            first_errors = "\n".join(line for line in proc.stderr.splitlines() if "error:" in line)[:1500]
            raise ToolchainError(f"emcc failed on {unit}.cc:\n{first_errors}\n(full log: {log_path})",
                                 "check that Debian's emscripten 3.1.6 is installed (`make setup`)")
        return unit, time.time() - started

    log(f"web runtime: compiling {', '.join(RUNTIME_UNITS)} with emcc (a few minutes, once per TVM version)")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for unit, seconds in pool.map(compile_one, RUNTIME_UNITS):
            log(f"web runtime: {unit}.o compiled in {seconds:.0f}s")


def emcc_version(emcc: str) -> str:
    return subprocess.run([emcc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]

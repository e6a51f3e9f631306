"""Link TVM-compiled model code with the cached web runtime into one `.wasm` that tvmjs loads.

Pass an instance as `fcompile` to `Executable.export_library`. It asks TVM for wasm object files
(`object_format = "o"`) because wasm-ld 14 cannot read the LLVM-22 bitcode TVM would emit otherwise.
"""
from __future__ import annotations

import shutil
import subprocess

from modelbuild.errors import ToolchainError
from modelbuild.toolchain import web_runtime

WASM_PAGE = 64 * 1024
INITIAL_MEMORY = 160 * 1024 * 1024

# Same settings as tvm.support.emcc.create_tvmjs_wasm, which tvmjs expects.
LINK_FLAGS = ["--no-entry", "-s", "WASM_BIGINT=1", "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0", "-s", "STANDALONE_WASM=1",
              "-s", "ALLOW_MEMORY_GROWTH=1", "-s", f"TOTAL_MEMORY={INITIAL_MEMORY}"]


# A model on the browser's CPU keeps its weights and KV cache in the wasm heap: let it grow to wasm32's
# ceiling (emscripten's default stops at 2 GB).
CPU_MEMORY_PAGES = (INITIAL_MEMORY // WASM_PAGE, 4 * 1024 ** 3 // WASM_PAGE)
CPU_HEAP_FLAGS = ["-s", f"MAXIMUM_MEMORY={CPU_MEMORY_PAGES[1] * WASM_PAGE}"]

# The threaded CPU build: its memory is shared and given by the page (every thread instantiates the module
# over it), and it links the threads flavor of the runtime. (Debian's emcc 3.1.6 refuses -pthread with
# STANDALONE_WASM, which tvmjs needs, so the threads are ours: toolchain/include/seam/wasm_threads.h.)
# emscripten's single-threaded libc and libc++ were not compiled with atomics, so wasm-ld would refuse the
# shared memory: only the engine's thread calls them (helpers run kernels, whose one allocation is locked).
THREADS_FLAGS = [*CPU_HEAP_FLAGS, "-s", "IMPORTED_MEMORY=1", "-Wl,--shared-memory", "-Wl,--no-check-features"]


class WasmLinker:
    """`-O1` links in about a second (6-7 MB); `-O3` takes about a minute and gives half the size."""

    object_format = "o"

    def __init__(self, opt_level: str = "-O1", extra_flags: tuple[str, ...] = (), runtime: str = "single"):
        self.opt_level = opt_level
        self.extra_flags = list(extra_flags)
        self.runtime = runtime  # the web runtime's flavor (web_runtime.FLAVORS)

    def __call__(self, output: str, objects, options=None) -> None:
        emcc = shutil.which("emcc")
        if emcc is None:
            raise ToolchainError("emcc not found", "run `make setup`, which installs Debian's emscripten package")
        objects = [objects] if isinstance(objects, str) else list(objects)
        runtime = [str(o) for o in web_runtime.runtime_objects(self.runtime)]
        cmd = [emcc, self.opt_level, *LINK_FLAGS, *self.extra_flags, "-o", output, *runtime, *objects, *(options or [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(f"linking {output} failed:\n{(proc.stdout + proc.stderr)[-2000:]}",
                                 "rebuild the web runtime with `make setup`; if it persists, report the log above")

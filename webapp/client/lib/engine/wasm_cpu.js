// The browser's CPU as a place to run a model: the variant's WebAssembly SIMD build (catalog `cpu`), on this
// worker's thread, with helpers where the page allows (cpu_threads.js). What it needs is checked before
// anything is downloaded.
import { EngineError, ErrorKind } from "./errors.js";

// The smallest module that uses a SIMD instruction (i32x4.splat): valid only where wasm SIMD is.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0,
                                   65, 0, 253, 17, 11]);
const WASM32_HEAP_BYTES = 4 * 1024 ** 3;

export const hasWasmSimd = () => typeof WebAssembly === "object" && WebAssembly.validate(SIMD_PROBE);

export const cpuLabel = (threads) => `this browser, CPU (wasm SIMD, ${threads} thread${threads === 1 ? "" : "s"})`;

// Throws the typed error that says why `model` cannot run on this browser's CPU.
export function checkCpu(model) {
  if (!model.cpu) throw new EngineError(ErrorKind.NoCpuBuild, `${model.id} has no CPU build (only float32 ` +
                                        "presets have one, e.g. q4f32_1); the answer can come from the server");
  if (!hasWasmSimd()) throw new EngineError(ErrorKind.NoWasmSimd, "this browser has no WebAssembly SIMD, which " +
                                            "the CPU engine needs; the answer can come from the server");
  if (model.cpu.memory_bytes > WASM32_HEAP_BYTES)
    throw new EngineError(ErrorKind.OutOfMemory, `${model.id} needs ${(model.cpu.memory_bytes / 1e9).toFixed(1)} GB ` +
                          "of wasm memory, over WebAssembly's 4 GB; the answer can come from the server");
}

// A wasm trap while the model runs: the heap could not grow (out of memory) or another fault.
export function cpuError(error) {
  const message = String(error?.message || error);
  if (error instanceof RangeError || /memory|allocat/i.test(message))
    return new EngineError(ErrorKind.OutOfMemory, `the CPU engine ran out of memory (${message}); ` +
                           "the answer can continue on the server");
  return new EngineError(ErrorKind.CPUExecution, `the CPU engine failed while computing (${message})`);
}

// The CPU build on several threads: the variant's threaded wasm (catalog `cpu.threads`) over a shared memory,
// one instance on the engine's thread and one in each helper Worker (cpu_thread.js), all running TVM's
// parallel loops together (build/modelbuild/toolchain/include/seam/wasm_threads.h). Shared memory needs a
// cross-origin isolated page (SharedArrayBuffer): elsewhere, and wherever a helper cannot start, the
// single-thread build runs and the engine says why.
import { EngineError, ErrorKind } from "./errors.js";

const STACK_BYTES = 1 << 20;   // each helper's stack (its kernels keep their arrays in the heap)
const START_TIMEOUT_MS = 10_000;

// How many threads the CPU build may use here, and why it is one: {threads, why}. `requested`: a number
// from the engine's settings (`cpuThreads`), or undefined for every core up to `most` (the server's
// policy, cpu.max_threads, which its router predicts with: router/routing.py cpu_threads).
export function threadsHere(model, requested, most) {
  const cores = globalThis.navigator?.hardwareConcurrency || 1;
  if (requested !== undefined && requested !== null && !(Number.isInteger(requested) && requested >= 1))
    throw new EngineError(ErrorKind.InvalidRequest, `cpuThreads must be a whole number of threads, 1 or more (got ${requested})`);
  const wanted = Math.min(requested ?? cores, cores, most ?? cores);
  if (!model.cpu?.threads) return { threads: 1, why: "this build has no threaded CPU build" };
  if (requested === 1) return { threads: 1, why: "1 thread asked" };
  if (!globalThis.crossOriginIsolated || typeof SharedArrayBuffer !== "function")
    return { threads: 1, why: "the page is not cross-origin isolated, so no shared memory" };
  if (wanted === 1) return { threads: 1, why: cores === 1 ? "this device has 1 core" : "the server's policy allows 1" };
  return { threads: wanted, why: null };
}

// The threaded build (`wasm`, bytes) on `threads` threads, as a tvmjs Instance: {tvm, threads, why, stop}.
// Where its helpers cannot start, its loops run on this thread alone: threads 1, and `why`.
export async function instantiateThreaded(wasm, model, threads) {
  const module = await WebAssembly.compile(wasm);
  const { memory, importObject } = sharedMemoryImports(model);
  const tvm = new tvmjs.Instance(module, importObject);
  try {
    return { tvm, threads, why: null, stop: await startHelpers(module, memory, tvm.exports, threads) };
  } catch (error) {
    return { tvm, threads: 1, why: `its helper threads could not start (${error.message})`, stop: () => {} };
  }
}

// The import object tvmjs instantiates the threaded build with: Emscripten's WASI glue, as for the
// single-thread build, with our shared memory (the glue looks for the memory among the exports).
function sharedMemoryImports(model) {
  const [initial, maximum] = model.cpu.threads.memory_pages;
  const memory = new WebAssembly.Memory({ initial, maximum, shared: true });
  const glue = tvmjs.createPolyfillWASI();  // {imports, start}
  return {
    memory,
    importObject: {
      imports: { ...glue.imports, env: { ...glue.imports.env, memory } },
      start: (instance) => glue.start({ exports: { ...instance.exports, memory } }),
    },
  };
}

// Starts `threads - 1` helpers on the instantiated build (`exports`, over `memory`, from `module`) and
// resolves once every one runs its loop; the parallel loops use them from then on. Returns a stop function.
// Rejects (and stops what started) if a helper cannot start within START_TIMEOUT_MS.
async function startHelpers(module, memory, exports, threads) {
  const tlsBytes = exports.seam_tls_size() >>> 0;
  if ((exports.seam_tls_align() >>> 0) > 16) throw new Error("the build's thread-local storage needs an alignment over 16");
  const workers = [];
  const stop = () => { exports.seam_threads_use(0); for (const worker of workers) worker.terminate(); };
  let failed = null;
  for (let index = 1; index < threads; index++) {
    const block = exports.seam_thread_memory(STACK_BYTES + Math.max(tlsBytes, 16)) >>> 0;
    if (!block) { stop(); throw new Error("no memory for a helper thread's stack"); }
    const worker = new Worker(new URL("./cpu_thread.js", import.meta.url), { type: "module", name: `seam-cpu-${index}` });
    worker.onmessage = ({ data }) => { if (data.error) failed ??= data.error; };
    worker.onerror = (event) => { failed ??= event.message || "the helper's script failed"; event.preventDefault(); };
    worker.postMessage({ module, memory, index, stackLow: block, stackHigh: block + STACK_BYTES, tls: block + STACK_BYTES });
    workers.push(worker);
  }
  const started = performance.now();
  while (exports.seam_threads_ready() < threads - 1 && !failed) {
    if (performance.now() - started > START_TIMEOUT_MS) failed = `helpers not running after ${START_TIMEOUT_MS / 1000} s`;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  if (failed) { stop(); throw new Error(failed); }
  exports.seam_threads_use(threads - 1);
  return stop;
}

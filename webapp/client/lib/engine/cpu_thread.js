// One helper thread of the threaded CPU build (cpu_threads.js): an instance of the model's module over the
// engine's shared memory that claims tasks of TVM's parallel loops, as the engine's thread does, until it is
// terminated. It calls none of the module's imports (its kernels only compute): each is a function that fails
// loudly.
const unavailable = (name) => () => { throw new Error(`${name} is not available on a helper thread`); };
const harmless = { emscripten_notify_memory_growth: () => {}, __cxa_thread_atexit: () => 0 };

self.onmessage = ({ data: { module, memory, index, stackLow, stackHigh, tls } }) => {
  const imports = {};
  for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    imports[from] ??= {};
    imports[from][name] = kind === "memory" ? memory : harmless[name] ?? unavailable(`${from}.${name}`);
  }
  let wasm;
  try {
    wasm = new WebAssembly.Instance(module, imports).exports;  // no _initialize: the engine's thread did it
    wasm.stackRestore(stackHigh);
    wasm.seam_thread_setup(stackHigh, stackLow, tls);
  } catch (error) {
    self.postMessage({ error: `helper ${index} could not start: ${error.message}` });
    return;
  }
  try {
    wasm.seam_thread_run();  // returns only if a task trapped
  } catch (error) {
    wasm.seam_thread_lost();
    self.postMessage({ error: `helper ${index} failed: ${error.message}` });
  }
};

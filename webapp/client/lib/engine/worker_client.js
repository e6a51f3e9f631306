// The client's handle on the engine's Web Worker (worker.js): loads and unloads models by key
// (id@version@backend, engine_states.js) and streams answers from a loaded one, in OpenAI's chunk shape.
// It keeps no lifecycle of its own: browser_engine.js owns that and asks for each load once.
import { EngineError, ErrorKind } from "./errors.js";

// A worker from another origin's script cannot be started directly (a page that imports the client from
// the Seam server): a same-origin blob that imports it can, where the server allows the page (CORS).
function startWorker(url) {
  if (new URL(url).origin === self.location.origin) return new Worker(url, { type: "module" });
  const trampoline = new Blob([`import ${JSON.stringify(url)};`], { type: "text/javascript" });
  return new Worker(URL.createObjectURL(trampoline), { type: "module" });
}

export class WorkerEngine {
  // `workerUrl`: worker.js; `settings`: the server's engine settings (vendor library URLs, grammar rules,
  // request limits, download part size) with the WebGPU feature level to ask for first.
  constructor(workerUrl, settings, { testHooks = false } = {}) {
    this.workerUrl = workerUrl;
    this.settings = settings;
    this.testHooks = testHooks;
    this.loads = new Map();    // key -> {model, kernels, onProgress, resolve, reject, info}
    this.pending = new Map();  // request id -> {push, fail}
    this.nextId = 1;
    this.start();
  }

  start() {
    this.worker = startWorker(this.workerUrl);
    this.worker.onmessage = ({ data }) => this.receive(data);
    this.worker.onerror = (event) => console.error(`browser engine: ${event.message || "the worker failed to start"}`);
  }

  // Loads `model` under `key` with a kernel set ("software", "gpu", "cpu"; undefined: the engine picks);
  // `onProgress` hears {phase: "download", loaded, total, ...} then {phase: "gpu" | "cpu"}.
  load(key, model, kernels, onProgress = () => {}) {
    return new Promise((resolve, reject) => {
      const load = { model, kernels, onProgress, resolve, reject };
      this.loads.set(key, load);
      this.postLoad(key, load);
    });
  }

  postLoad(key, { model, kernels }) {
    this.worker.postMessage({ type: "load", key, model, settings: { ...this.settings, kernels }, origin: self.location.origin,
                              testHooks: this.testHooks });
  }

  unload(key) {
    this.loads.delete(key);
    this.worker.postMessage({ type: "unload", key });
  }

  receive(data) {
    if (data.type === "uncaught") return console.error(`browser engine: ${data.message}`);
    if (data.type === "compiling") return this.watchCompile(data.id);
    if (data.type === "compiled") return clearTimeout(this.compileWatch);
    if (data.key !== undefined) return this.receiveLoad(data);
    const target = this.pending.get(data.id);
    if (!target) return;
    if (data.type === "error") target.fail(EngineError.fromJSON(data.error));
    else target.push(data);
  }

  receiveLoad({ key, type, error, ...rest }) {
    const load = this.loads.get(key);
    if (!load) return;  // unloaded meanwhile
    if (type === "progress") return load.onProgress(rest);
    if (type === "loaded") { load.info = rest; return load.resolve(rest); }
    this.loads.delete(key);
    load.reject(EngineError.fromJSON(error));
  }

  stop(id) { this.worker.postMessage({ type: "stop", id }); }

  // A schema compiles inside the worker's wasm, which nothing can interrupt: past the server's compile
  // timeout the worker is replaced, that answer fails with the server's schema error, any answer queued
  // behind it fails as interrupted, and the loaded models load again (from the browser's storage).
  watchCompile(id) {
    const seconds = this.settings.grammar.compile_timeout_s;
    this.compileWatch = setTimeout(() => {
      this.worker.terminate();
      for (const [pendingId, target] of this.pending)
        target.fail(pendingId === id
          ? new EngineError(ErrorKind.InvalidSchema, `the schema took longer than ${seconds} s to compile: simplify it ` +
                            "(fewer or shorter enum values, less nesting)")
          : new EngineError(ErrorKind.Restarted, "the browser engine restarted after another answer's schema took too long to compile"));
      this.start();
      for (const [key, load] of this.loads) if (load.info) this.postLoad(key, load);  // requests wait for these
    }, seconds * 1000);
  }

  // The catalog's self-check on a loaded model: greedy tokens for its prompt ids, stop token included, to
  // compare with its golden tokens; and the speeds it ran at.
  async selfCheck(key, { prompt_token_ids, max_tokens }) {
    const result = await this.create(key, { messages: [], prompt_token_ids, max_tokens, temperature: 0 });
    const { token_ids, stop_token_id, stats } = result.seam;
    return { tokens: stop_token_id === null ? token_ids : [...token_ids, stop_token_id], stats };
  }

  // The length in tokens of a prompt for `messages`, by a loaded model's own tokenizer and chat template.
  countTokens(key, messages) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const settle = (finish) => (value) => { this.pending.delete(id); finish(value); };
      this.pending.set(id, { push: settle((data) => resolve(data.tokens)), fail: settle(reject) });
      this.worker.postMessage({ type: "count", id, key, messages });
    });
  }

  // Test-only (needs the server's SEAM_TEST_HOOKS): the GPU device is destroyed after `tokens` tokens.
  loseDeviceAfter(key, tokens) { this.worker.postMessage({ type: "lose-device", key, afterTokens: tokens }); }

  terminate() { this.worker.terminate(); }

  // One answer from the model loaded under `key`: a stream of OpenAI chunks (with `stop()`), or with
  // `stream: false` one completion. Chunks carry `seam.token_ids` (the pieces' tokens, for a handover) and
  // the last one `seam.stats`.
  create(key, { messages, stream = false, model, ...options }) {
    const id = this.nextId++;
    const queue = [];
    let wake = null, failure = null, finished = false;
    this.pending.set(id, {
      push: (data) => { queue.push(data); wake?.(); },
      fail: (error) => { failure = error; wake?.(); },
    });
    this.worker.postMessage({ type: "generate", id, key, messages, options });
    const created = Math.floor(Date.now() / 1000);
    const name = model || key.split("@")[0];
    const chunk = (delta, finish = null, extra = {}) => ({
      id: `chatcmpl-browser-${id}`, object: "chat.completion.chunk", created, model: name,
      choices: [{ index: 0, delta, finish_reason: finish }], ...extra });
    const engine = this;
    async function* chunks() {
      try {
        yield chunk({ role: "assistant", content: "" });
        for (;;) {
          while (!queue.length && !failure) await new Promise((resolve) => { wake = resolve; });
          if (failure) throw failure;
          const data = queue.shift();
          if (data.type === "chunk") {
            yield chunk({ content: data.text }, null, { seam: { completion_tokens: data.tokens, token_ids: data.ids } });
            continue;
          }
          finished = true;
          yield chunk({}, data.finish_reason, { usage: data.usage, seam: { stats: data.stats, token_ids: data.token_ids,
                                                                            stop_token_id: data.stop_token_id } });
          return;
        }
      } finally {
        if (!finished) engine.stop(id);  // the consumer left early: free the GPU
        engine.pending.delete(id);
      }
    }
    if (stream) {
      const iterator = chunks();
      iterator.stop = () => this.stop(id);
      return Promise.resolve(iterator);
    }
    return (async () => {
      let content = "", last = null;
      for await (const c of chunks()) { content += c.choices[0].delta.content || ""; last = c; }
      return { id: last.id, object: "chat.completion", created, model: name, usage: last.usage, seam: last.seam,
               choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: last.choices[0].finish_reason }] };
    })();
  }
}

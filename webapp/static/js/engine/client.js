// The page's handle on the browser engine: the same shape as OpenAI's client,
// `engine.chat.completions.create({messages, stream, temperature, top_p, max_tokens, seed, response_format})`, so the UI
// does not care whether tokens come from this worker or from the server.
import { EngineError, ErrorKind } from "./errors.js";

export class WorkerEngine {
  // `engine`: the page config's engine settings (worker URL, vendor library URLs, grammar rules, request limits,
  // download part size); the options: test hooks, the WebGPU feature level to ask for first, and the kernel set to force.
  constructor({ workerUrl, vendor, grammar, request, partBytes }, { testHooks = false, featureLevel = "core", kernels } = {}) {
    this.workerUrl = workerUrl;
    this.settings = { vendor, grammar, request, featureLevel, partBytes, kernels };
    this.testHooks = testHooks;
    this.pending = new Map();  // generation id -> {push, fail}
    this.nextId = 1;
    this.chat = { completions: { create: (request) => this.create(request) } };
    this.startWorker();
  }

  startWorker() {
    this.worker = new Worker(this.workerUrl, { type: "module" });
    this.worker.onmessage = ({ data }) => this.receive(data);
    this.worker.onerror = (event) => console.error(`browser engine: ${event.message || "the worker failed to start"}`);
  }

  // One load at a time. Asking again for the model being loaded (or loaded) joins that load: the new
  // listener first gets the progress so far, then the rest. Another model waits for the current load.
  // `options.kernels` ("software", "gpu", or "cpu": the CPU build) forces a kernel set for this load.
  load(model, onProgress = () => {}, options = {}) {
    const latest = this.latestLoad;
    const key = `${model.id}@${options.kernels ?? ""}`;
    if (latest?.key === key) {
      latest.log.forEach(onProgress);
      latest.listeners.push(onProgress);
      return latest.promise;
    }
    const load = { key, log: [], listeners: [onProgress] };
    const previous = latest ? latest.promise.catch(() => {}) : Promise.resolve();
    load.promise = previous.then(() => new Promise((resolve, reject) => {
      Object.assign(load, { resolve, reject, model, options });
      this.activeLoad = load;  // the worker's progress/loaded/error messages are about this one
      this.postLoad(load);
    }));
    load.promise.catch(() => { if (this.latestLoad === load) this.latestLoad = null; });
    this.latestLoad = load;
    return load.promise;
  }

  postLoad({ model, options }) {
    this.worker.postMessage({ type: "load", model, settings: { ...this.settings, ...options }, origin: location.origin,
                              testHooks: this.testHooks });
  }

  receive(data) {
    if (data.type === "uncaught") return console.error(`browser engine: ${data.message}`);
    if (data.type === "compiling") return this.watchCompile(data.id);
    if (data.type === "compiled") return clearTimeout(this.compileWatch);
    const load = this.activeLoad;
    if (data.type === "progress") {
      load.log.push(data);
      return load.listeners.forEach((listener) => listener(data));
    }
    if (data.type === "loaded") { this.model = data; return load.resolve(data); }
    if (data.type === "error" && data.id === undefined) return load.reject(EngineError.fromJSON(data.error));
    const target = this.pending.get(data.id);
    if (!target) return;
    if (data.type === "error") target.fail(EngineError.fromJSON(data.error));
    else target.push(data);
  }

  stop(id) { this.worker.postMessage({ type: "stop", id }); }

  // A schema compiles inside the worker's wasm, which nothing can interrupt: past the server's compile
  // timeout the worker is replaced, that answer fails with the server's schema error, any answer queued
  // behind it fails as interrupted, and the loaded model loads again (from the browser's storage).
  watchCompile(id) {
    const seconds = this.settings.grammar.compile_timeout_s;
    this.compileWatch = setTimeout(() => {
      this.worker.terminate();
      for (const [pendingId, target] of this.pending)
        target.fail(pendingId === id
          ? new EngineError(ErrorKind.InvalidSchema, `the schema took longer than ${seconds} s to compile: simplify it ` +
                            "(fewer or shorter enum values, less nesting)")
          : new EngineError(ErrorKind.Restarted, "the browser engine restarted after another answer's schema took too long to compile"));
      this.startWorker();
      const loaded = this.latestLoad;
      if (loaded?.model) {
        loaded.promise = new Promise((resolve, reject) => Object.assign(loaded, { resolve, reject }));
        this.activeLoad = loaded;
        this.postLoad(loaded);
      }
    }, seconds * 1000);
  }

  // The catalog's self-check: greedy tokens for its prompt ids, stop token included, to compare with
  // its golden tokens; and the speeds it ran at.
  async selfCheck({ prompt_token_ids, max_tokens }) {
    const result = await this.create({ messages: [], prompt_token_ids, max_tokens, temperature: 0 });
    const { token_ids, stop_token_id, stats } = result.seam;
    return { tokens: stop_token_id === null ? token_ids : [...token_ids, stop_token_id], stats };
  }

  // The length in tokens of a prompt for `messages`, by the loaded model's own tokenizer and chat template.
  countTokens(messages) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const settle = (finish) => (value) => { this.pending.delete(id); finish(value); };
      this.pending.set(id, { push: settle((data) => resolve(data.tokens)), fail: settle(reject) });
      this.worker.postMessage({ type: "count", id, messages });
    });
  }

  // Test-only (needs the server's SEAM_TEST_HOOKS): the GPU device is destroyed after `tokens` tokens.
  loseDeviceAfter(tokens) { this.worker.postMessage({ type: "lose-device", afterTokens: tokens }); }

  terminate() { this.worker.terminate(); }

  create({ messages, stream = false, model, ...options }) {
    const id = this.nextId++;
    const queue = [];
    let wake = null, failure = null, finished = false;
    this.pending.set(id, {
      push: (data) => { queue.push(data); wake?.(); },
      fail: (error) => { failure = error; wake?.(); },
    });
    this.worker.postMessage({ type: "generate", id, messages, options });
    const created = Math.floor(Date.now() / 1000);
    const name = model || this.model?.id || "browser";
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
          yield chunk({}, data.finish_reason === "abort" ? "stop" : data.finish_reason,
                      { usage: data.usage, seam: { stats: data.stats, token_ids: data.token_ids,
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

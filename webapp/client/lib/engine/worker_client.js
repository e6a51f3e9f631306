// A tab's handle on the engine's host (worker.js): loads and unloads models by key (id@version@backend,
// engine_states.js) and streams answers from a loaded one, in OpenAI's chunk shape. It keeps no lifecycle of
// its own: browser_engine.js owns that and asks for each load once.
//
// The host is shared by every tab of this origin and server build (a SharedWorker) where the browser can run
// the engine in one; otherwise this tab starts its own dedicated Worker, and `host` says why. A shared host
// that ends (it crashed, or broke off this tab's connection) or stops answering is replaced by a dedicated
// one: answers in flight fail as restarted (the server takes them over), loads, counts and self-checks are
// asked again there.
import { complete } from "./completion.js";
import { threadsHere } from "./cpu_threads.js";
import { EngineError, ErrorKind } from "./errors.js";
import { streamDeltas } from "./tools.js";

const HELLO_TIMEOUT_MS = 30_000;   // a shared host may be inside a long step for another tab
const HEARTBEAT_MS = 10_000;       // the host drops a tab silent for 75 s (worker.js), should its lock not tell

// A worker from another origin's script cannot be started directly (a page that imports the client from
// the Seam server): a same-origin blob that imports it can, where the server allows the page (CORS).
function startWorker(url) {
  if (new URL(url).origin === self.location.origin) return new Worker(url, { type: "module" });
  const trampoline = new Blob([`import ${JSON.stringify(url)};`], { type: "text/javascript" });
  return new Worker(URL.createObjectURL(trampoline), { type: "module" });
}

// Why this tab cannot use a shared host, or null when it may try.
function sharedUnavailable(url, shared) {
  if (!shared) return "the page asked for an engine of its own (sharedEngine: false)";
  if (typeof SharedWorker === "undefined") return "this browser has no SharedWorker";
  if (new URL(url).origin !== self.location.origin)
    return "the client comes from another origin than the page, and a SharedWorker must be the page's own";
  return null;
}

// Unique enough for a lock's name (crypto.randomUUID needs a secure context, as Web Locks do).
export const randomName = () => self.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;

// Holds a Web Lock for as long as this tab lives, so the shared host learns at once when it is gone.
function holdTabLock() {
  if (!self.navigator.locks) return Promise.resolve(null);
  const name = `seam-tab-${randomName()}`;
  return new Promise((held) => self.navigator.locks.request(name, () => { held(name); return new Promise(() => {}); }));
}

export class WorkerEngine {
  // `workerUrl`: worker.js; `settings`: the server's engine settings (vendor library URLs, grammar rules,
  // request limits, download part size) with the WebGPU feature level to ask for first; `build`: the server's
  // build, which names the shared host; `shared`: false keeps this tab's engine to itself.
  constructor(workerUrl, settings, { testHooks = false, build = "", shared = true } = {}) {
    this.workerUrl = workerUrl;
    this.settings = settings;
    this.testHooks = testHooks;
    this.build = build;
    this.loads = new Map();    // key -> {model, kernels, onProgress, resolve, reject, info}
    this.pending = new Map();  // request id -> {push, fail, again (re-sends it to a new host, where it may)}
    this.nextId = 1;
    this.host = { kind: "starting", why: null, tabs: 1 };
    const unavailable = sharedUnavailable(workerUrl, shared);
    this.ready = unavailable ? this.startDedicated(unavailable)
      : this.startShared().catch((error) => this.replaceShared(`it failed to start (${error.message})`));
  }

  // --- the host -------------------------------------------------------------------------------------

  startDedicated(why) {
    const worker = startWorker(this.workerUrl);
    worker.onmessage = ({ data }) => this.receive(data);
    worker.onerror = (event) => console.error(`browser engine: ${event.message || "the worker failed to start"}`);
    this.channel = { post: (message) => worker.postMessage(message), close: () => worker.terminate() };
    this.host = { kind: "dedicated", why, tabs: 1 };
    return Promise.resolve(this.host);
  }

  async startShared() {
    let worker;
    try {
      worker = new SharedWorker(this.workerUrl, { type: "module", name: `seam-engine@${this.build}` });
    } catch (error) {
      return this.startDedicated(`this browser refused a shared engine (${error.message})`);
    }
    const port = worker.port;
    const queued = [];  // what this tab asks before the host said hello
    let hello = null;
    this.channel = { post: (message) => (hello ? port.postMessage(message) : queued.push(message)),
                     close: () => { clearInterval(beat); port.postMessage({ type: "bye" }); port.close(); } };
    const beat = setInterval(() => port.postMessage({ type: "alive" }), HEARTBEAT_MS);
    const answered = new Promise((resolve) => {
      port.onmessage = ({ data }) => (data.type === "hello" ? resolve(data) : this.receive(data));
      worker.onerror = () => resolve(null);
      setTimeout(() => resolve(null), HELLO_TIMEOUT_MS);
    });
    port.start();
    port.postMessage({ type: "hello", tab: await holdTabLock() });
    hello = await answered;
    if (!hello) return this.replaceShared("the shared engine did not start");
    if (hello.lock) self.navigator.locks.request(hello.lock, () => this.replaceShared("the shared engine stopped"));
    this.host = { kind: "shared", why: null, tabs: hello.tabs, gpu: hello.gpu, isolated: hello.isolated };
    for (const message of queued) port.postMessage(message);
    return this.host;
  }

  // The shared host is gone or cannot serve this tab: this tab goes on with a dedicated one (once).
  replaceShared(why) {
    if (this.host.kind === "dedicated") return this.host;
    this.moveToDedicated(`the shared engine could not go on: ${why}`,
                         new EngineError(ErrorKind.Restarted, `the shared browser engine ended (${why}); this tab runs its own now`));
    return this.host;
  }

  // Leaves the host for a new dedicated one (`why`): answers in flight fail with `error` (but `except`, failed
  // already), everything else is asked of the new host.
  moveToDedicated(why, error, except = null) {
    const old = this.channel;
    this.startDedicated(why);
    try { old.close(); } catch (closed) { /* already closed */ }
    for (const [id, target] of this.pending) {
      if (id === except) continue;
      if (target.again) target.again();
      else target.fail(error);
    }
    for (const [key, load] of this.loads) this.postLoad(key, load);  // requests wait for these
  }

  // The host's own account: {host, tabs, loads, self_checks} (loads and self-checks it ran, for every tab).
  async hostStats() {
    await this.ready;
    return this.ask("stats", {}, (data) => data);
  }

  // --- models -------------------------------------------------------------------------------------------

  // Loads `model` under `key` with a kernel set ("software", "gpu", "cpu"; undefined: the engine picks);
  // `onProgress` hears {phase: "download", loaded, total, ...} then {phase: "gpu" | "cpu"}. A shared host
  // without WebGPU cannot load a WebGPU model, and one that is not cross-origin isolated (Chromium's) runs
  // the CPU build on one thread where this tab could run it on all its cores: this tab then starts its own.
  async load(key, model, kernels, onProgress = () => {}) {
    const host = await this.ready;
    if (host.kind === "shared" && kernels !== "cpu" && !host.gpu && self.navigator.gpu)
      this.replaceShared("this browser's SharedWorker has no WebGPU");
    else if (host.kind === "shared" && kernels === "cpu" && !host.isolated && this.threadsWouldRun(model))
      this.replaceShared("this browser's SharedWorker cannot share memory between threads, and this tab can run " +
                         "the CPU build on every core");
    return new Promise((resolve, reject) => {
      const load = { model, kernels, onProgress, resolve, reject };
      this.loads.set(key, load);
      this.postLoad(key, load);
    });
  }

  // Whether this tab's own engine would run `model`'s CPU build on more than one thread (cpu_threads.js).
  threadsWouldRun(model) {
    return threadsHere(model, this.settings.cpuThreads, this.settings.cpuMaxThreads).threads > 1;
  }

  postLoad(key, { model, kernels }) {
    this.channel.post({ type: "load", key, model, settings: { ...this.settings, kernels }, origin: self.location.origin,
                        testHooks: this.testHooks });
  }

  unload(key) {
    this.loads.delete(key);
    this.channel.post({ type: "unload", key });
  }

  receive(data) {
    if (data.type === "uncaught") return console.error(`browser engine: ${data.message}`);
    if (data.type === "refused") return this.replaceShared(data.message);
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

  stop(id) { this.channel.post({ type: "stop", id }); }

  // A schema compiles inside the host's wasm, which nothing can interrupt: past the server's compile timeout
  // this tab leaves that host (a dedicated one is ended; a shared one goes on for the other tabs once the
  // compile is done), that answer fails with the server's schema error, any answer queued behind it fails as
  // interrupted, and the loaded models load again in a new dedicated host (from the browser's storage).
  watchCompile(id) {
    const seconds = this.settings.grammar.compile_timeout_s;
    this.compileWatch = setTimeout(() => {
      const why = `the schema took longer than ${seconds} s to compile`;
      this.pending.get(id)?.fail(new EngineError(ErrorKind.InvalidSchema, `${why}: simplify it ` +
                                                 "(fewer or shorter enum values, less nesting)"));
      this.moveToDedicated(this.host.kind === "shared" ? `this tab left the shared engine when ${why}` : this.host.why,
                           new EngineError(ErrorKind.Restarted, "the browser engine restarted after another answer's " +
                                           "schema took too long to compile"), id);
    }, seconds * 1000);
  }

  // One request answered by one message (`answer(data)` is the result), asked again of a new host.
  ask(type, fields, answer) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const settle = (finish) => (value) => { this.pending.delete(id); finish(value); };
      const send = () => this.channel.post({ type, id, ...fields });
      this.pending.set(id, { push: settle((data) => resolve(answer(data))), fail: settle(reject), again: send });
      send();
    });
  }

  // The catalog's self-check on a loaded model: greedy tokens for its prompt ids, stop token included, to
  // compare with its golden tokens; the speeds it ran at; and whether it ran for this tab (a shared host
  // runs it once for all of them, and only the tab it ran for reports it).
  selfCheck(key, { prompt_token_ids, max_tokens }) {
    return this.ask("selfcheck", { key, check: { prompt_token_ids, max_tokens } }, ({ tokens, stats, ranHere }) => ({ tokens, stats, ranHere }));
  }

  // The length in tokens of a prompt for `messages`, by a loaded model's own tokenizer and chat template.
  countTokens(key, messages) {
    return this.ask("count", { key, messages }, (data) => data.tokens);
  }

  // Test-only (needs the server's SEAM_TEST_HOOKS): the GPU device is destroyed after `tokens` tokens; the
  // shared host ends.
  loseDeviceAfter(key, tokens) { this.channel.post({ type: "lose-device", key, afterTokens: tokens }); }

  crashSharedHost() { this.channel.post({ type: "crash" }); }

  terminate() { this.channel.close(); }

  // One answer from the model loaded under `key`: a stream of OpenAI chunks (with `stop()`), or with
  // `stream: false` one completion. Chunks carry `seam.token_ids` (the pieces' tokens, for a handover) and
  // the last one `seam.stats`, which says which host ran it.
  create(key, { messages, stream = false, model, ...options }) {
    const id = this.nextId++;
    const queue = [];
    let wake = null, failure = null, finished = false;
    this.pending.set(id, {
      push: (data) => { queue.push(data); wake?.(); },
      fail: (error) => { failure = error; wake?.(); },
    });
    this.channel.post({ type: "generate", id, key, messages, options });
    const created = Math.floor(Date.now() / 1000);
    const name = model || key.split("@")[0];
    const chunk = (delta, finish = null, extra = {}) => ({
      id: `chatcmpl-browser-${id}`, object: "chat.completion.chunk", created, model: name,
      choices: [{ index: 0, delta, finish_reason: finish }], ...extra });
    const engine = this;
    // A piece of the answer as the server streams it: its text as content, or with tools its content and
    // call deltas (its own text, markers and all, in `seam.text`, for a handover), the tokens on the first.
    function* pieceChunks({ text, tokens, ids, read }) {
      const seam = { completion_tokens: tokens, token_ids: ids, ...(read ? { text } : {}) };
      const deltas = read ? streamDeltas(read) : [{ content: text }];
      for (const [i, delta] of (deltas.length ? deltas : [{ content: "" }]).entries())
        yield chunk(delta, null, i ? {} : { seam });
    }
    async function* chunks() {
      try {
        yield chunk({ role: "assistant", content: "" });
        for (;;) {
          while (!queue.length && !failure) await new Promise((resolve) => { wake = resolve; });
          if (failure) throw failure;
          const data = queue.shift();
          if (data.type === "chunk") {
            yield* pieceChunks(data);
            continue;
          }
          finished = true;
          const stats = { ...data.stats, engine_host_why: engine.host.why };
          yield chunk({}, data.finish_reason, { usage: data.usage, seam: { stats, token_ids: data.token_ids,
                                                                            stop_token_id: data.stop_token_id } });
          return;
        }
      } finally {
        if (!finished) engine.stop(id);  // the consumer left early: free the engine
        engine.pending.delete(id);
      }
    }
    if (stream) {
      const iterator = chunks();
      iterator.stop = () => this.stop(id);
      return Promise.resolve(iterator);
    }
    return complete(chunks());
  }
}

// The one owner of the browser engine: which models it holds and in what state (engine_states.js), the
// worker they live in, their self-checks, and the switch to a new version.
//
// A model is loaded once per key (id@version@backend): asking again joins the load under way, a ready one
// is given at once, and a failed one gives its error again (the router hears of it and sends answers to
// the server). A new version of a model loads and is checked beside the old one, which keeps answering;
// once the new one is ready, answers go to it, the old one is unloaded when its answers have ended, and
// only then are the old version's files deleted.
import { EngineStates, State, engineKey, isLoading } from "./engine_states.js";
import { EngineError, ErrorKind } from "./engine/errors.js";
import { deleteOtherVersions } from "./engine/model_cache.js";
import { WorkerEngine } from "./engine/worker_client.js";
import { remembered } from "./remembered.js";

export class BrowserEngine {
  // `workerUrl` and `settings`: the engine's script and the server's engine settings; `events`: the client's
  // (engine, progress, selfcheck, update); `reportSelfCheck(body)`: sends a self-check to the server;
  // `recordSpeed(model, kernels, stats)`: keeps a speed this browser ran at.
  // `build` and `shared`: the server's build, which names the engine shared by this origin's tabs, and
  // whether to use it (worker_client.js).
  constructor({ workerUrl, settings, testHooks, build, shared = true, events, reportSelfCheck, recordSpeed }) {
    this.workerUrl = workerUrl;
    this.settings = settings;
    this.testHooks = testHooks;
    this.host = { build, shared };
    this.events = events;
    this.reportSelfCheck = reportSelfCheck;
    this.recordSpeed = recordSpeed;
    this.states = new EngineStates((entry) => events.emit("engine", entry));
    this.loads = new Map();    // key -> the promise of its ready info
    this.answering = new Map(); // key -> answers streaming from it
    this.worker = null;        // started when a model is first wanted
  }

  get engine() {
    return (this.worker ??= new WorkerEngine(this.workerUrl, this.settings, { testHooks: this.testHooks, ...this.host }));
  }

  // Where this tab's models run: {kind: "shared" | "dedicated", why (a dedicated one's reason), tabs}, or null
  // before the first load.
  hostInfo() { return this.worker ? { ...this.worker.host } : null; }

  // The ready model answers go to: the newest ready one (of `id` when given).
  ready(id) {
    const ready = this.states.inState(State.Ready).filter((e) => id === undefined || e.id === id);
    return ready[ready.length - 1] ?? null;
  }

  // Resolves with the ready entry of `model` (a catalog entry at the version wanted) on a kernel set
  // ("software", "gpu", "cpu"; undefined: the engine picks), downloading, loading and checking it first.
  ensure(model, kernels) {
    const key = engineKey(model, kernels);
    const entry = this.states.get(key);
    if (entry.state === State.Ready) return Promise.resolve(entry);
    if (entry.state === State.Failed) return Promise.reject(entry.error);
    if (entry.state === State.Retired) return Promise.reject(new EngineError(ErrorKind.NotLoaded, `${key} was replaced by a newer version`));
    if (!this.loads.has(key)) this.loads.set(key, this.load(key, model, kernels));
    return this.loads.get(key);
  }

  async load(key, model, kernels) {
    this.states.move(key, State.Downloading, { model: model.id });
    try {
      const info = await this.engine.load(key, model, kernels, (p) => {
        if (p.phase === "download") this.events.emit("progress", { key, id: model.id, version: model.version, ...p });
        else if (this.states.get(key).state === State.Downloading) this.states.move(key, State.Loading, { phase: p.phase });
      });
      if (this.states.get(key).state === State.Downloading) this.states.move(key, State.Loading);
      this.states.move(key, State.Checking, { adapter: info.adapter, kernels: info.kernels });
      const speeds = await this.selfCheck(key, model, `${info.adapter}, ${info.kernels} kernels`);
      if (speeds) this.recordSpeed(model, info.kernels, speeds);
      const ready = this.states.move(key, State.Ready, { adapter: info.adapter, kernels: info.kernels,
                                                          kernelsWhy: info.kernelsWhy ?? null,
                                                          ...(info.kernels === "cpu" ? { threads: info.threads,
                                                                                       threadsWhy: info.threadsWhy } : {}) });
      await this.switchTo(ready, model);
      return ready;
    } catch (error) {
      this.fail(key, error, "load");
      throw error;
    } finally {
      this.loads.delete(key);
    }
  }

  // The first time this device loads a model version, its answer to the catalog's check prompt must equal
  // the catalog's golden tokens; a device that computes something else is not used for that version.
  // Returns the speeds the check ran at, when it ran.
  async selfCheck(key, model, adapter) {
    if (remembered.selfCheckPassed(model, adapter)) return null;
    const check = model.self_check;
    const { tokens, stats, ranHere } = await this.engine.selfCheck(key, check);
    const golden = check.golden_token_ids;
    const passed = tokens.length === golden.length && tokens.every((t, i) => t === golden[i]);
    this.events.emit("selfcheck", { id: model.id, version: model.version, adapter, passed, tokens, golden });
    // A shared engine checks a model once for all tabs: the tab it ran for reports it.
    if (ranHere) this.reportSelfCheck({ id: model.id, version: model.version, adapter: adapter.slice(0, 200), passed,
                                        token_ids: tokens, client_id: remembered.clientId() });
    if (passed) {
      remembered.selfCheckPassed(model, adapter, true);
      return stats;
    }
    const reason = `self-check failed: this device's answer to the check prompt (${tokens.join(" ")}) differs from ` +
                   `the catalog's (${golden.join(" ")})`;
    remembered.markUnreliable(model, reason);
    throw new EngineError(ErrorKind.SelfCheck, reason);
  }

  // A model just became ready: the ones it replaces retire (unloaded once their answers end), and the
  // storage of this model's other versions is freed, except versions still loading or answering.
  async switchTo(ready, model) {
    for (const old of this.states.inState(State.Ready)) {
      if (old.key === ready.key) continue;
      this.states.move(old.key, State.Retired);
      if (old.id === ready.id) this.events.emit("update", { id: ready.id, from: old.version, to: ready.version, state: "ready" });
      if (!this.answering.get(old.key)) this.engine.unload(old.key);
    }
    await deleteOtherVersions(model, self.location.origin, this.states.versionsInUse(model.id)).catch(() => 0);
  }

  // A failure of the engine itself (not of a request): the model is not used again in this client.
  fail(key, error, during) {
    const entry = this.states.get(key);
    if (entry.state === State.Failed || entry.state === State.None) return;
    if (isLoading(entry.state) || entry.state === State.Ready)
      this.states.move(key, State.Failed, { reason: error.message, kind: error.kind, error, during });
    this.worker?.unload(key);
  }

  // One answer from a ready model: its stream, counted so that a retired model is unloaded only after it.
  async answer(entry, request) {
    this.answering.set(entry.key, (this.answering.get(entry.key) ?? 0) + 1);
    const done = () => {
      const left = this.answering.get(entry.key) - 1;
      this.answering.set(entry.key, left);
      if (!left && this.states.get(entry.key).state === State.Retired) this.engine.unload(entry.key);
    };
    try {
      const stream = await this.engine.create(entry.key, { ...request, stream: true });
      return withEnd(stream, done);
    } catch (error) {
      done();
      throw error;
    }
  }

  // The prompt's length by the ready model's tokenizer, or null when none is ready.
  async countTokens(messages, id) {
    const entry = this.ready(id);
    return entry ? this.engine.countTokens(entry.key, messages) : null;
  }

  // Every model version that failed in this client: [{id, version, reason}] (for the router).
  failures() {
    return this.states.inState(State.Failed).filter((e) => e.kind !== ErrorKind.Restarted)
      .map((e) => ({ id: e.id, version: e.version, reason: String(e.reason).slice(0, 400) }));
  }

  loseDeviceAfter(tokens) {
    const entry = this.ready();
    if (entry) this.engine.loseDeviceAfter(entry.key, tokens);
  }

  close() {
    this.worker?.terminate();
    this.worker = null;
  }
}

// A stream that calls `done` once, however it ends; `stop()` passes through.
function withEnd(stream, done) {
  let ended = false;
  const end = () => { if (!ended) { ended = true; done(); } };
  async function* chunks() {
    try { yield* stream; } finally { end(); }
  }
  const wrapped = chunks();
  wrapped.stop = () => stream.stop();
  return wrapped;
}

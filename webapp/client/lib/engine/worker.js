// The Web Worker that hosts the browser engine, so the page never freezes while the GPU works. It may
// hold more than one model at once (a new version loads and is checked beside the one answering), each
// under its key, id@version@backend (engine_states.js); the client (worker_client.js) says which answers.
// Messages in: load {key, model, settings: {vendor, grammar, request, featureLevel, partBytes, kernels}, origin,
// testHooks}, unload {key}, generate {id, key, messages, options}, count {id, key, messages}, stop {id},
// and, only when the page's server enables test hooks, lose-device {key, afterTokens}.
// Messages out: progress {key, ...}, loaded {key, ...}, compiling {id}, compiled {id}, chunk {id, text, tokens, ids},
// done {id, ...}, counted {id, tokens}, error {key, error} (a load) or {id, error} (a request), uncaught {message}.
import { EngineError, ErrorKind } from "./errors.js";
import { LocalEngine } from "./local_engine.js";

// What fails outside any request (a rejection nobody awaited) goes to the page, which logs it: a worker's
// rejections never reach the page's own error events.
self.addEventListener("unhandledrejection", (event) =>
  self.postMessage({ type: "uncaught", message: String(event.reason instanceof Error ? `${event.reason.name}: ${event.reason.message}` : event.reason) }));

const engines = new Map();  // key -> LocalEngine, once loaded
const loads = new Map();    // key -> the promise of its load: a request for that key waits for it
let testHooks = false;
let generations = Promise.resolve();
const stopped = new Set();
const errorOf = (e) => (e instanceof EngineError ? e.toJSON() : { kind: "EngineError", message: String(e && e.message || e) });

function engineFor(key) {
  const engine = engines.get(key);
  if (!engine) throw new EngineError(ErrorKind.NotLoaded, `${key} is not loaded in the browser engine; load it first`);
  return engine;
}

async function generate({ id, key, messages, options }) {
  try {
    const engine = engineFor(key);
    const notify = (type) => self.postMessage({ type, id });  // "compiling" and "compiled": a schema's grammar
    for await (const piece of engine.generate(messages, options, () => stopped.has(id), notify)) {
      self.postMessage(piece.text !== undefined ? { type: "chunk", id, text: piece.text, tokens: piece.tokens, ids: piece.ids }
                                                : { type: "done", id, ...piece });
    }
  } catch (e) {
    self.postMessage({ type: "error", id, error: errorOf(e) });
  } finally {
    stopped.delete(id);
  }
}

async function load({ key, model, settings, origin }) {
  try {
    const engine = new LocalEngine(settings);
    const info = await engine.load(model, origin, (p) => self.postMessage({ type: "progress", key, ...p }));
    engines.set(key, engine);
    self.postMessage({ type: "loaded", key, ...info });
  } catch (e) {
    self.postMessage({ type: "error", key, error: errorOf(e) });
  }
}

self.onmessage = async ({ data }) => {
  if (data.type === "load") {
    testHooks = Boolean(data.testHooks);
    loads.set(data.key, load(data));
  } else if (data.type === "unload") {
    engines.get(data.key)?.dispose();
    engines.delete(data.key);
    loads.delete(data.key);
  } else if (data.type === "generate") {
    // One generation at a time (a self-check and an answer may be asked for together), each after its
    // model's load. Stop messages are not queued, so they reach a waiting or running generation.
    generations = generations.then(() => loads.get(data.key)).then(() => generate(data));
  } else if (data.type === "count") {
    try {
      self.postMessage({ type: "counted", id: data.id, tokens: engineFor(data.key).promptIds(data.messages).length });
    } catch (e) {
      self.postMessage({ type: "error", id: data.id, error: errorOf(e) });
    }
  } else if (data.type === "stop") {
    stopped.add(data.id);
  } else if (data.type === "lose-device" && testHooks) {
    engines.get(data.key)?.loseDeviceAfter(data.afterTokens);
  }
};

// The Web Worker that hosts the browser engine, so the page never freezes while the GPU works.
// Messages in: load {model, settings: {vendor, grammar, request, featureLevel, partBytes, kernels}, origin, testHooks}, generate {id, messages, options},
// count {id, messages}, stop {id},
// and, only when the page's server enables test hooks, lose-device {afterTokens}.
// Messages out: progress, loaded, compiling {id}, compiled {id}, chunk {id, text, tokens, ids}, done {id, ...}, counted {id, tokens},
// error {id?, error}, uncaught {message}.
import { EngineError, ErrorKind } from "./errors.js";
import { LocalEngine } from "./local_engine.js";

// What fails outside any request (a rejection nobody awaited) goes to the page, which logs it: a worker's
// rejections never reach the page's own error events.
self.addEventListener("unhandledrejection", (event) =>
  self.postMessage({ type: "uncaught", message: String(event.reason instanceof Error ? `${event.reason.name}: ${event.reason.message}` : event.reason) }));

let engine = null;
let testHooks = false;
let generations = Promise.resolve();
let loading = Promise.resolve();  // a generation asked for while a model loads waits for that load
const stopped = new Set();
const errorOf = (e) => (e instanceof EngineError ? e.toJSON() : { kind: "EngineError", message: String(e && e.message || e) });

async function generate({ id, messages, options }) {
  try {
    if (!engine) throw new EngineError(ErrorKind.NotLoaded, "load a model before generating");
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
async function load(data) {
  try {
    const next = new LocalEngine(data.settings);  // a failed load leaves the loaded model in place
    const info = await next.load(data.model, data.origin, (p) => self.postMessage({ type: "progress", ...p }));
    engine = next;
    self.postMessage({ type: "loaded", ...info });
  } catch (e) {
    self.postMessage({ type: "error", error: errorOf(e) });
  }
}

self.onmessage = async ({ data }) => {
  if (data.type === "load") {
    testHooks = Boolean(data.testHooks);
    loading = load(data);
  } else if (data.type === "generate") {
    // One generation at a time (a self-check and an answer may be asked for together): they share the
    // engine's buffers. Stop messages are not queued, so they reach a waiting or running generation.
    generations = generations.then(() => loading).then(() => generate(data));
  } else if (data.type === "count") {
    try {
      if (!engine) throw new EngineError(ErrorKind.NotLoaded, "load a model before counting tokens");
      self.postMessage({ type: "counted", id: data.id, tokens: engine.promptIds(data.messages).length });
    } catch (e) {
      self.postMessage({ type: "error", id: data.id, error: errorOf(e) });
    }
  } else if (data.type === "stop") {
    stopped.add(data.id);
  } else if (data.type === "lose-device" && testHooks && engine) {
    engine.loseDeviceAfter(data.afterTokens);
  }
};

// The Web Worker that hosts the browser engine, so the page never freezes while the GPU works.
// Messages in: load {model, vendor, origin}, generate {id, messages, options}, stop {id}.
// Messages out: progress, loaded, chunk {id, text}, done {id, ...}, error {id?, error}.
import { EngineError } from "./errors.js";
import { LocalEngine } from "./local_engine.js";

let engine = null;
const stopped = new Set();
const errorOf = (e) => (e instanceof EngineError ? e.toJSON() : { kind: "EngineError", message: String(e && e.message || e) });

self.onmessage = async ({ data }) => {
  if (data.type === "load") {
    try {
      const next = new LocalEngine(data.vendor);  // a failed load leaves the loaded model in place
      const info = await next.load(data.model, data.origin, (p) => self.postMessage({ type: "progress", ...p }));
      engine = next;
      self.postMessage({ type: "loaded", ...info });
    } catch (e) {
      self.postMessage({ type: "error", error: errorOf(e) });
    }
  } else if (data.type === "generate") {
    try {
      if (!engine) throw new EngineError("EngineNotLoadedError", "load a model before generating");
      for await (const piece of engine.generate(data.messages, data.options, () => stopped.has(data.id))) {
        self.postMessage(piece.text !== undefined ? { type: "chunk", id: data.id, text: piece.text }
                                                  : { type: "done", id: data.id, ...piece });
      }
    } catch (e) {
      self.postMessage({ type: "error", id: data.id, error: errorOf(e) });
    } finally {
      stopped.delete(data.id);
    }
  } else if (data.type === "stop") {
    stopped.add(data.id);
  }
};

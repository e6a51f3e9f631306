// What a Seam client tells the UI as it happens: `seam.on(type, listener)` returns a function that
// unsubscribes. A listener that throws is logged and does not stop the others (or the client).
export class Events {
  constructor(types) {
    this.types = new Set(types);
    this.listeners = new Map();
  }

  on(type, listener) {
    if (!this.types.has(type)) throw new TypeError(`no event "${type}": the events are ${[...this.types].join(", ")}`);
    if (typeof listener !== "function") throw new TypeError(`the listener for "${type}" must be a function`);
    const set = this.listeners.get(type) ?? new Set();
    this.listeners.set(type, set.add(listener));
    return () => set.delete(listener);
  }

  emit(type, payload) {
    for (const listener of this.listeners.get(type) ?? []) {
      try { listener(payload); } catch (error) { console.error(`a Seam "${type}" listener failed:`, error); }
    }
  }
}

// What the page remembers about this device across visits, in localStorage: a random client id (for the
// server's fleet counts), which model versions passed their self-check on which adapter, and which
// failed it. Where storage is off (private windows), it is remembered for this page only.
const memory = new Map();

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(`seam.${key}`);
    return raw === null ? (memory.get(key) ?? fallback) : JSON.parse(raw);
  } catch (error) { return memory.get(key) ?? fallback; }
}

function write(key, value) {
  memory.set(key, value);
  try { localStorage.setItem(`seam.${key}`, JSON.stringify(value)); } catch (error) { /* kept in memory */ }
}

const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
const checkKey = (model, adapter) => `${model.id}@${model.version}@${adapter}`;

export const remembered = {
  clientId() {
    let id = read("client-id", null);
    if (!id) write("client-id", (id = randomId()));
    return id;
  },
  // With `passed`, records a pass; without, tells whether one was recorded.
  selfCheckPassed(model, adapter, passed) {
    const checks = read("self-checks", {});
    if (passed === undefined) return checks[checkKey(model, adapter)] === true;
    write("self-checks", { ...checks, [checkKey(model, adapter)]: true });
  },
  unreliable() { return read("unreliable", []); },
  markUnreliable(model, reason) {
    const kept = this.unreliable().filter((u) => !(u.id === model.id && u.version === model.version));
    write("unreliable", [...kept, { id: model.id, version: model.version, reason: reason.slice(0, 400) }].slice(-32));
  },
};

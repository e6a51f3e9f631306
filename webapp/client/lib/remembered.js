// What the client remembers about this device across visits, in localStorage (under "seam."): a random
// client id (for the server's fleet counts), which model versions passed their self-check on which adapter,
// which failed it, how fast each ran here and how fast the cloud answered, the last model that was ready, each server's client config
// (so a page can still answer in the browser while its server is unreachable), and the reports waiting for it. Where storage is off
// (private windows), it is remembered for this page only.
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

const SPEED_SAMPLES = 5;
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
const checkKey = (model, adapter) => `${model.id}@${model.version}@${adapter}`;

const WAITING_REPORTS = 50;                   // the newest are kept
const REPORT_KEPT_MS = 7 * 24 * 3600 * 1000;  // a report older than a week no longer tells the operator much

export const remembered = {
  // Reports the server could not be sent yet (server.js): [{endpoint, body, at}], oldest first. With
  // `reports`, keeps those (the newest WAITING_REPORTS).
  waitingReports(reports) {
    if (reports !== undefined) return write("waiting-reports", reports.slice(-WAITING_REPORTS));
    return read("waiting-reports", []).filter((r) => Date.now() - r.at < REPORT_KEPT_MS);
  },
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
  // This browser's real prefill and decode speeds per (variant, version, adapter, kernel set), from its
  // self-checks and answers: the median of the last few, which the router prefers to any prediction.
  recordSpeed(model, adapter, kernels, stats) {
    if (!(stats?.decode_tokens_per_s > 0) || !(stats.prefill_tokens_per_s > 0)) return;
    const key = `${model.id}@${model.version}@${kernels}@${adapter}`;
    const speeds = read("speeds", {});
    const samples = [...(speeds[key]?.samples ?? []), [stats.prefill_tokens_per_s, stats.decode_tokens_per_s]].slice(-SPEED_SAMPLES);
    delete speeds[key];  // re-added last: the most recently used are kept
    write("speeds", Object.fromEntries([...Object.entries(speeds), [key, { id: model.id, version: model.version, kernels, adapter, samples }]].slice(-16)));
  },
  measuredSpeeds(adapter) {
    return Object.values(read("speeds", {})).filter((s) => s.adapter === adapter).map((s) => ({
      id: s.id, version: s.version, kernels: s.kernels, answers: s.samples.length,
      prefill_tokens_per_s: median(s.samples.map((x) => x[0])), decode_tokens_per_s: median(s.samples.map((x) => x[1])),
    }));
  },
  // The cloud's speed as this page saw it, per server and model: time to first token and decode speed of
  // its own cloud answers (the network included), the median of the last few, sent to the router so that
  // "whichever is faster" compares measured with measured.
  recordCloudSpeed(server, model, stats) {
    if (!(stats?.decode_tokens_per_s > 0) || !(stats.ttft_s > 0)) return;
    const key = `${server}|${model}`;
    const all = read("cloud-speeds", {});
    const samples = [...(all[key] ?? []), [stats.ttft_s, stats.decode_tokens_per_s]].slice(-SPEED_SAMPLES);
    delete all[key];
    write("cloud-speeds", Object.fromEntries([...Object.entries(all), [key, samples]].slice(-8)));
  },
  cloudSpeed(server, model) {
    const samples = read("cloud-speeds", {})[`${server}|${model}`];
    return samples?.length ? { ttft_s: median(samples.map((x) => x[0])), decode_tokens_per_s: median(samples.map((x) => x[1])),
                               answers: samples.length } : null;
  },
  unreliable() { return read("unreliable", []); },
  // The model version that was last ready here, per server and model name: {id, version, kernels}.
  lastReady(server, name, value) {
    const all = read("last-ready", {});
    const key = `${server}|${name}`;
    if (value === undefined) return all[key] ?? null;
    delete all[key];
    write("last-ready", Object.fromEntries([...Object.entries(all), [key, value]].slice(-16)));
  },
  // A server's client config (GET /api/client) as last fetched.
  serverConfig(server, value) {
    const all = read("servers", {});
    if (value === undefined) return all[server] ?? null;
    delete all[server];
    write("servers", Object.fromEntries([...Object.entries(all), [server, value]].slice(-4)));
  },
  markUnreliable(model, reason) {
    const kept = this.unreliable().filter((u) => !(u.id === model.id && u.version === model.version));
    write("unreliable", [...kept, { id: model.id, version: model.version, reason: reason.slice(0, 400) }].slice(-32));
  },
};

// The engine's host, so no page freezes while the GPU or the CPU build works. It runs either as a SharedWorker
// that every tab of an origin and build connects to (one model in memory, loaded and checked once, for all of
// a user's tabs), or as a tab's own dedicated Worker where a SharedWorker cannot run the engine. The protocol
// is the same; each connection is a tab (its WorkerEngine, worker_client.js), which says which model answers.
//
// It may hold more than one model at once (a new version loads and is checked beside the one answering), each
// under its key, id@version@backend (engine_states.js), loaded once however many tabs ask, and freed when no
// connected tab holds it. Generations run one at a time, the tabs taking turns (round robin), each tab's in
// the order it sent them. A tab that is gone (its Web Lock released, or silent past HEARTBEAT_TIMEOUT_MS) has
// its queued requests dropped and its running answer stopped; the host ends with the last tab (the browser
// ends a SharedWorker when no document uses it). A message that is not part of the protocol ends that tab's
// connection, never the host.
//
// Messages in: hello {tab (its lock's name, or null)}, alive, bye, load {key, model, settings, origin, testHooks},
// unload {key}, generate {id, key, messages, options}, count {id, key, messages}, selfcheck {id, key, check},
// stop {id}, and, only once a load enabled the server's test hooks, lose-device {key, afterTokens}, crash.
// Messages out: hello {host, lock, gpu, isolated, tabs}, progress {key, ...}, loaded {key, ...}, compiling {id},
// compiled {id}, chunk {id, text, tokens, ids, read (with tools: content and call events)}, done {id, ...}, counted {id, tokens},
// checked {id, tokens, stats, ranHere}, error {key, error} (a load) or {id, error} (a request),
// refused {message} (then the connection is closed), uncaught {message}.
import { EngineError, ErrorKind } from "./errors.js";
import { LocalEngine } from "./local_engine.js";
import { randomName } from "./worker_client.js";

const SHARED = typeof SharedWorkerGlobalScope !== "undefined" && self instanceof SharedWorkerGlobalScope;
export const HEARTBEAT_TIMEOUT_MS = 75_000;  // a hidden tab's timers may fire once a minute (Chromium)

const engines = new Map();  // key -> {engine, info}, once loaded
const loads = new Map();    // key -> the promise of its load
const checks = new Map();   // key -> the promise of its self-check's result: run once for every tab
const tabs = new Set();
const stopped = new Set();
const jobs = [];            // generations waiting: {tab, data, run, forAll}, taken round robin by tab
let running = null;         // the generation under way: {key, freeAfter (models to free once it ends)}
let lastServed = null, testHooks = false, nextTab = 1;
const counts = { loads: 0, self_checks: 0, abandoned: 0 };  // what this host did, for every tab
const errorOf = (e) => (e instanceof EngineError ? e.toJSON() : { kind: "EngineError", message: String(e && e.message || e) });

// This host's lock, held for its whole life: a tab waiting for it learns that the host ended (crashed, or
// was closed), and moves to an engine of its own.
const HOST_LOCK = `seam-engine-host-${randomName()}`;
const lockHeld = !SHARED || !self.navigator.locks ? Promise.resolve(null)
  : new Promise((held) => self.navigator.locks.request(HOST_LOCK, () => { held(HOST_LOCK); return new Promise(() => {}); }));

// What fails outside any request (a rejection nobody awaited) goes to the tabs, which log it: a worker's
// rejections never reach a page's own error events.
self.addEventListener("unhandledrejection", (event) => {
  const message = String(event.reason instanceof Error ? `${event.reason.name}: ${event.reason.message}` : event.reason);
  for (const tab of tabs) tab.send({ type: "uncaught", message });
});

class Tab {
  constructor(port) {
    this.port = port;
    this.id = nextTab++;
    this.holds = new Set();   // keys this tab loaded and has not unloaded
    this.requests = new Set();  // ids of its generations queued or running
    this.seen = Date.now();
    this.gone = false;
    tabs.add(this);
    port.onmessage = ({ data }) => this.receive(data);
  }

  send(message) {
    if (!this.gone) this.port.postMessage(message);
  }

  receive(data) {
    this.seen = Date.now();
    const problem = malformed(data);
    if (problem) {
      this.send({ type: "refused", message: `the engine's host ended this connection: ${problem}` });
      return this.leave();
    }
    HANDLERS[data.type](this, data);
  }

  // The tab is gone, or broke the protocol: its work is dropped and what only it held is freed.
  leave() {
    if (this.gone) return;
    this.gone = true;
    tabs.delete(this);
    if (SHARED) this.port.close();
    for (let i = jobs.length - 1; i >= 0; i--) if (jobs[i].tab === this && !jobs[i].forAll) jobs.splice(i, 1);
    for (const id of this.requests) stopped.add(requestKey(this, id));
    counts.abandoned += this.requests.size;
    for (const key of this.holds) release(key, this);
  }

  // Tells when the tab is gone: its lock, which it holds for its life, is released (at once, where the
  // browser has Web Locks), or it sends nothing for HEARTBEAT_TIMEOUT_MS (it sends `alive` every few seconds).
  watch(lock) {
    if (!SHARED) return;  // a dedicated worker ends with its tab
    if (lock && self.navigator.locks) self.navigator.locks.request(lock, () => this.leave());
    const check = setInterval(() => {
      if (this.gone) clearInterval(check);
      else if (Date.now() - this.seen > HEARTBEAT_TIMEOUT_MS) this.leave();
    }, 5_000);
  }
}

function release(key, tab) {
  tab.holds.delete(key);
  if ([...tabs].some((t) => t.holds.has(key))) return;
  const engine = engines.get(key)?.engine;
  engines.delete(key);
  loads.delete(key);
  checks.delete(key);
  // The answer of a tab that just left may still be running on it (it stops at its next token): the model
  // is freed after it, never under it.
  if (engine && running?.key === key) running.freeAfter.push(engine);
  else engine?.dispose();
}

// --- the protocol ----------------------------------------------------------------------------------------

const isText = (v) => typeof v === "string" && v.length > 0 && v.length <= 400;
const isId = (v) => Number.isSafeInteger(v) && v > 0;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const FIELDS = {  // what each message must carry
  hello: (d) => d.tab === null || isText(d.tab), alive: () => true, bye: () => true,
  load: (d) => isText(d.key) && isObject(d.model) && isObject(d.settings) && typeof d.origin === "string",
  unload: (d) => isText(d.key),
  generate: (d) => isId(d.id) && isText(d.key) && Array.isArray(d.messages) && isObject(d.options ?? {}),
  count: (d) => isId(d.id) && isText(d.key) && Array.isArray(d.messages),
  selfcheck: (d) => isId(d.id) && isText(d.key) && isObject(d.check),
  stop: (d) => isId(d.id), stats: (d) => isId(d.id),
  "lose-device": (d) => testHooks && isText(d.key), crash: () => testHooks && SHARED,
};

function malformed(data) {
  if (!isObject(data) || typeof data.type !== "string") return "a message must be an object with a type";
  if (!Object.hasOwn(FIELDS, data.type)) return `no message of type ${JSON.stringify(data.type.slice(0, 40))}`;
  return FIELDS[data.type](data) ? null : `a ${data.type} message without the fields it needs`;
}

const HANDLERS = {
  hello: async (tab, { tab: lock }) => {
    tab.watch(lock);
    tab.send({ type: "hello", host: SHARED ? "shared" : "dedicated", lock: await lockHeld, gpu: Boolean(self.navigator.gpu),
             isolated: Boolean(self.crossOriginIsolated),
               tabs: tabs.size });
  },
  alive: () => {},
  bye: (tab) => tab.leave(),
  load: (tab, data) => load(tab, data),
  unload: (tab, { key }) => release(key, tab),
  generate: (tab, data) => {
    tab.requests.add(data.id);
    jobs.push({ tab, data, run: () => generate(tab, data) });
    schedule();
  },
  count: (tab, { id, key, messages }) => {
    try {
      tab.send({ type: "counted", id, tokens: engineFor(key).promptIds(messages).length });
    } catch (e) {
      tab.send({ type: "error", id, error: errorOf(e) });
    }
  },
  selfcheck: (tab, data) => selfCheck(tab, data),
  stop: (tab, { id }) => { if (tab.requests.has(id)) stopped.add(requestKey(tab, id)); },
  // What this host has done, for the tab's status (and the tests: one load and one self-check for many tabs,
  // the answers of tabs that left abandoned).
  stats: (tab, { id }) => tab.send({ type: "stats", id, host: SHARED ? "shared" : "dedicated", tabs: tabs.size,
                                     queued: jobs.length, answering: Boolean(running), ...counts }),
  "lose-device": (tab, { key, afterTokens }) => engines.get(key)?.engine.loseDeviceAfter(afterTokens),
  crash: () => self.close(),
};

// A generation's steps await the GPU, but Chromium runs those callbacks ahead of the messages tabs post, so
// without a pause the host would hear nothing (a stop, another tab's request, a tab that left) until the
// answer ends. A message to itself queues behind the messages already waiting: they are handled first.
const YIELD_EVERY_MS = 20;
const yielder = new MessageChannel();
const resumes = [];
yielder.port1.onmessage = () => resumes.shift()?.();
const letMessagesIn = () => new Promise((resume) => { resumes.push(resume); yielder.port2.postMessage(null); });

// Request ids are each tab's own: the host keys them by tab.
const requestKey = (tab, id) => `${tab.id}:${id}`;

function engineFor(key) {
  const loaded = engines.get(key);
  if (!loaded) throw new EngineError(ErrorKind.NotLoaded, `${key} is not loaded in the browser engine; load it first`);
  return loaded.engine;
}

// --- loading, once per key -------------------------------------------------------------------------------

async function load(tab, { key, model, settings, origin, testHooks: hooks }) {
  testHooks ||= Boolean(hooks);
  tab.holds.add(key);
  if (!loads.has(key)) loads.set(key, loadOnce(key, model, settings, origin));
  try {
    const info = await loads.get(key);
    tab.send({ type: "loaded", key, ...info });
  } catch (e) {
    tab.send({ type: "error", key, error: errorOf(e) });
  }
}

// Progress goes to every tab that holds the key while it loads.
async function loadOnce(key, model, settings, origin) {
  counts.loads++;
  const engine = new LocalEngine(settings);
  const progress = (p) => { for (const t of tabs) if (t.holds.has(key)) t.send({ type: "progress", key, ...p }); };
  try {
    const info = await engine.load(model, origin, progress);
    if (![...tabs].some((t) => t.holds.has(key))) {  // every tab that wanted it left meanwhile
      engine.dispose();
      loads.delete(key);
    } else engines.set(key, { engine, info });
    return info;
  } catch (e) {
    loads.delete(key);  // a later ask tries again
    throw e;
  }
}

// --- generations, one at a time, tabs taking turns --------------------------------------------------------

function schedule() {
  if (running || !jobs.length) return;
  const order = [...new Set(jobs.map((j) => j.tab))];
  const next = order.find((t) => t.id > (lastServed ?? 0)) ?? order.reduce((a, b) => (a.id < b.id ? a : b));
  const job = jobs.splice(jobs.findIndex((j) => j.tab === next), 1)[0];
  lastServed = next.id;
  running = { key: job.data.key, freeAfter: [] };
  (async () => {
    try { await loads.get(job.data.key); } catch (e) { /* the generation reports it */ }
    await job.run();
  })().finally(() => {
    for (const engine of running.freeAfter) engine.dispose();
    running = null;
    schedule();
  });
}

async function generate(tab, { id, key, messages, options }) {
  const stopKey = requestKey(tab, id);
  try {
    const engine = engineFor(key);
    const notify = (type) => tab.send({ type, id });  // "compiling" and "compiled": a schema's grammar
    const withHost = (stats) => ({ ...stats, engine_host: SHARED ? "shared" : "dedicated", tabs: tabs.size });
    let paused = performance.now();
    for await (const piece of engine.generate(messages, options ?? {}, () => stopped.has(stopKey), notify)) {
      tab.send(piece.text !== undefined ? { type: "chunk", id, text: piece.text, tokens: piece.tokens, ids: piece.ids, read: piece.read }
                                        : { type: "done", id, ...piece, stats: withHost(piece.stats) });
      if (performance.now() - paused > YIELD_EVERY_MS) {
        await letMessagesIn();
        paused = performance.now();
      }
    }
  } catch (e) {
    tab.send({ type: "error", id, error: errorOf(e) });
  } finally {
    stopped.delete(stopKey);
    tab.requests.delete(id);
  }
}

// The catalog's self-check of a loaded model, run once per load however many tabs ask: greedy tokens for its
// prompt ids, stop token included, and the speeds it ran at. `ranHere` tells the tab that asked first.
async function selfCheck(tab, { id, key, check }) {
  let ranHere = false;
  if (!checks.has(key)) {
    ranHere = true;
    checks.set(key, new Promise((resolve, reject) => {
      const data = { key, messages: [], options: { prompt_token_ids: check.prompt_token_ids, max_tokens: check.max_tokens,
                                                    temperature: 0 } };
      jobs.push({ tab, data, forAll: true, run: () => greedy(key, data.messages, data.options).then(resolve, reject) });
      schedule();
    }));
  }
  try {
    tab.send({ type: "checked", id, ...(await checks.get(key)), ranHere });
  } catch (e) {
    checks.delete(key);
    tab.send({ type: "error", id, error: errorOf(e) });
  }
}

async function greedy(key, messages, options) {
  counts.self_checks++;
  let last = null;
  for await (const piece of engineFor(key).generate(messages, options, () => false)) last = piece;
  const { token_ids, stop_token_id, stats } = last;
  return { tokens: stop_token_id === null ? token_ids : [...token_ids, stop_token_id], stats };
}

if (SHARED) self.onconnect = ({ ports: [port] }) => new Tab(port);
else new Tab(self);

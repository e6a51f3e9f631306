// The Seam client: an OpenAI-shaped chat API whose answers run in this browser when the device can and on
// the Seam server when it can't, decided per answer by the server's router from this browser's
// measurements, and handed over mid-answer when a path fails. It owns everything a page needs for that:
// the routing (route_queue.js), the browser engine's lifecycle (browser_engine.js), one answer's path and
// handover (answers.js), and what is remembered about this device (remembered.js). index.d.ts documents it.
import { Answer, mayCallTools } from "./answers.js";
import { complete } from "./engine/completion.js";
import { BrowserEngine } from "./browser_engine.js";
import { CloudClient } from "./cloud_client.js";
import { State, backendOf, engineKey } from "./engine_states.js";
import { EngineError, ErrorKind } from "./engine/errors.js";
import { cachedVersions } from "./engine/model_cache.js";
import { Events } from "./events.js";
import { CPU_KEY, adapterKey, collectProbeReport } from "./probe.js";
import { remembered } from "./remembered.js";
import { RouteQueue } from "./route_queue.js";
import { askRouter, fetchCatalog, fetchConfig, report, resolveConfig, sendWaitingReports } from "./server.js";

export const PREFERENCES = ["auto", "fastest", "local_only", "cloud_only"];
const OPTIONS = {
  server: "string", model: "string", preference: PREFERENCES, kernels: ["software", "gpu", "cpu"],
  featureLevel: ["core", "compatibility"], prefetch: "boolean", variant: "string", sharedEngine: "boolean",
  cpuThreads: "number",
};
const CONNECT_OPTIONS = ["server", "model", "preference", "kernels", "featureLevel", "prefetch", "sharedEngine",
                         "cpuThreads"];
const EVENTS = ["decision", "progress", "engine", "selfcheck", "handover", "update"];

const optionError = (message) => new EngineError(ErrorKind.InvalidOption, message);

// The options, checked: each error names the option and what it takes.
function checkOptions(options, allowed = CONNECT_OPTIONS, where = "Seam.connect") {
  if (options === null || typeof options !== "object" || Array.isArray(options))
    throw optionError(`${where} takes an object of options (${allowed.join(", ")})`);
  for (const [name, value] of Object.entries(options)) {
    if (!allowed.includes(name)) throw optionError(`${where} has no option "${name}"; its options are ${allowed.join(", ")}`);
    const rule = OPTIONS[name];
    if (name === "cpuThreads" && value !== undefined && !(Number.isInteger(value) && value >= 1))
      throw optionError(`option cpuThreads must be a whole number of threads, 1 or more, not ${JSON.stringify(value)}`);
    if (value === undefined || (Array.isArray(rule) ? rule.includes(value) : typeof value === rule)) continue;
    throw optionError(`option ${name} must be ${Array.isArray(rule) ? `one of ${rule.join(", ")}` : `a ${rule}`}, ` +
                      `not ${JSON.stringify(value)}`);
  }
  return options;
}

function serverUrl(server = self.location?.origin) {
  let url;
  try { url = new URL(server); } catch (error) { /* refused below */ }
  if (!url || !["http:", "https:"].includes(url.protocol))
    throw optionError(`option server must be the Seam server's URL (http:// or https://), not ${JSON.stringify(server)}`);
  return url.href.endsWith("/") ? url.href : `${url.href}/`;
}

export class Seam {
  // Connects to the Seam server at `options.server` (default: this page's origin). A server that cannot be
  // reached is refused with the reason, unless this browser remembers its config and holds a checked model
  // of it: then the client answers in the browser, and status().server says the server is unreachable.
  static async connect(options = {}) {
    checkOptions(options);
    const server = serverUrl(options.server);
    let config, unreachable = null;
    try {
      config = await fetchConfig(server);
      remembered.serverConfig(server, config);
    } catch (error) {
      const kept = remembered.serverConfig(server);
      if (error.kind === ErrorKind.ApiVersion || !kept) throw error;
      config = resolveConfig(server, kept);
      unreachable = error;
    }
    const seam = new Seam(server, config, options, unreachable);
    seam.checkModel(options.model);
    seam.firstDecision = seam.refresh();  // it comes as an event (and in status()), once the device is probed
    return seam;
  }

  constructor(server, config, options, unreachable) {
    this.server = server;
    this.config = config;
    this.catalog = config.models;
    this.modelOption = options.model;
    this.preference = options.preference ?? "auto";
    this.kernels = options.kernels;
    this.prefetch = options.prefetch ?? true;
    this.reachable = { reachable: !unreachable, error: unreachable?.message ?? null };
    this.events = new Events(EVENTS);
    this.device = "none";  // this browser's adapter key (probe.js): its WebGPU speeds are kept under it
    this.report = null;
    this.localDecision = null;
    this.updatesTold = new Set();
    this.inFlight = 0;
    this.cloud = new CloudClient(config.endpoints.chat);
    this.browser = new BrowserEngine({
      workerUrl: new URL("./engine/worker.js", import.meta.url).href,
      settings: { ...config.engine, featureLevel: options.featureLevel ?? "core", cpuThreads: options.cpuThreads },
      testHooks: config.testHooks, build: config.build ?? "", shared: options.sharedEngine ?? true, events: this.events,
      reportSelfCheck: (body) => report(config.endpoints.self_check, body),
      recordSpeed: (model, kernels, stats) => this.recordSpeed(model, kernels, stats),
    });
    this.routes = new RouteQueue((numbers) => this.askRouter(numbers), (decision) => this.decided(decision));
    this.events.on("engine", (entry) => { if (entry.state === State.Ready) this.rememberReady(entry); });
    this.chat = { completions: { create: (request, requestOptions) => this.create(request, requestOptions) } };
    this.models = { list: () => this.listModels() };
    if (config.testHooks) this.test = { loseDeviceAfter: (tokens) => this.browser.loseDeviceAfter(tokens),
                                        hostStats: () => this.browser.engine.hostStats(),
                                        crashSharedHost: () => this.browser.engine.crashSharedHost() };
  }

  on(type, listener) { return this.events.on(type, listener); }

  // Changes the model or the preference; the router is asked again.
  async configure(options) {
    checkOptions(options, ["model", "preference"], "configure");
    if ("model" in options) this.checkModel(options.model);
    if ("model" in options) this.modelOption = options.model;
    if (options.preference) this.preference = options.preference;
    await this.refresh();
  }

  checkModel(model) {
    if (model === undefined || !this.catalog.length || this.catalog.some((m) => m.model === model || m.id === model)) return;
    throw optionError(`option model: ${model} is not in the server's catalog (it has ` +
                      `${[...new Set(this.catalog.map((m) => m.model))].join(", ")})`);
  }

  // What the client holds and last decided.
  status() {
    const summary = ({ error, ...entry }) => entry;
    const ready = this.browser.ready();
    return { api_version: this.config.api_version, server: { url: this.server, ...this.reachable },
             model: this.modelOption ?? null, preference: this.preference,
             decision: this.localDecision ?? this.routes.latest, report: this.report,
             engine: ready ? summary(ready) : null, engines: this.browser.states.all().map(summary),
             engine_host: this.browser.hostInfo(), answering: this.inFlight };
  }

  // OpenAI's chat.completions.create: a stream of chunks with `stream: true`, else one completion.
  // `signal` (an AbortSignal) stops the answer: it ends with finish_reason "abort" and what was given.
  async create(request, { signal } = {}) {
    if (request === null || typeof request !== "object" || !Array.isArray(request.messages) || !request.messages.length)
      throw new EngineError(ErrorKind.InvalidRequest, "messages must be a non-empty list of {role, content} objects");
    const answer = new Answer(this, request, signal);
    this.inFlight++;
    let chunks;
    try {
      await answer.start();
      chunks = this.counted(answer.chunks());
    } catch (error) {
      this.inFlight--;
      throw error;
    }
    return request.stream ? chunks : complete(chunks);
  }

  async *counted(chunks) {
    try { yield* chunks; } finally { this.inFlight--; }
  }

  // Downloads, loads and checks a browser model now: the variant the router picked, or `variant` (a catalog
  // id) on `kernels`. Resolves with the engine once ready; rejects with the typed error that stopped it.
  async prepare(options = {}) {
    checkOptions(options, ["variant", "kernels"], "prepare");
    await this.firstDecision;  // which backend the router picks for this device
    const decision = this.routes.latest;
    const id = options.variant ?? decision?.variant;
    if (!id) throw new EngineError(ErrorKind.NoEngine, "the router has not picked a browser model to prepare; pass {variant}");
    const entry = options.variant ? this.catalog.find((m) => m.id === id) : this.modelAt(id, decision.version);
    if (!entry) throw optionError(`option variant: ${id} is not in the server's catalog (it has ${this.catalog.map((m) => m.id).join(", ")})`);
    const { error, ...ready } = await this.load(entry, options.kernels ?? this.kernels ?? (decision?.backend === "cpu" ? "cpu" : undefined));
    return ready;
  }

  async listModels() {
    this.catalog = (await fetchCatalog(this.config, this.server)) ?? this.catalog;
    const cloud = await fetch(this.config.endpoints.models).then((r) => r.json()).then((b) => b.data.map((m) => m.id), () => []);
    const names = [...new Set([...this.catalog.map((m) => m.model), ...cloud])];
    const variant = (m) => ({ id: m.id, version: m.version, quantization: m.quantization, download_bytes: m.download_bytes,
                              cpu: Boolean(m.cpu), state: this.browser.states.get(engineKey(m, this.kernels)).state });
    return { object: "list", data: names.map((name) => ({
      id: name, object: "model", created: 0, owned_by: "seam", cloud: cloud.includes(name),
      variants: this.catalog.filter((m) => m.model === name).map(variant) })) };
  }

  close() { this.browser.close(); }

  // --- routing -----------------------------------------------------------------------------------------

  // A fresh decision without an answer's numbers (on connect, after a load, when a setting changes).
  refresh() {
    return this.routes.request().catch((error) => this.routingFailed(error));
  }

  // The decision for one answer: the router's, asked with the answer's numbers; when the router cannot be
  // asked, the last decision stands, or this browser answers with a model it holds and has checked.
  async decide(request) {
    try {
      return { decision: await this.routes.request(await this.answerNumbers(request)), error: null };
    } catch (error) {
      return { decision: await this.routingFailed(error), error };
    }
  }

  async routingFailed(error) {
    this.reachable = { reachable: false, error: error.message };
    this.localDecision = this.routes.latest ? null : await this.decideLocally(error);
    const decision = this.localDecision ?? this.routes.latest;
    this.events.emit("decision", { decision, error: error.message, local: Boolean(this.localDecision) });
    return decision;
  }

  async askRouter(numbers) {
    this.catalog = (await fetchCatalog(this.config, this.server)) ?? this.catalog;
    const report = await collectProbeReport({
      models: this.catalog, model: this.modelOption, preference: this.preference, unreliable: this.unreliable(),
      clientId: remembered.clientId(), measured: (key) => remembered.measuredSpeeds(key), kernels: this.kernels,
      measuredCloud: remembered.cloudSpeed(this.server, this.modelName()),
      ...(numbers ?? {}) });
    const decision = await askRouter(this.config.endpoints.route, report);
    sendWaitingReports();  // the server answers again: what waited for it goes now
    this.report = report;
    this.device = adapterKey(report);
    this.reachable = { reachable: true, error: null };
    this.localDecision = null;
    return decision;
  }

  // Each decision kept: told to the UI, and the browser model it names loaded (or prefetched) meanwhile.
  decided(decision) {
    this.events.emit("decision", { decision, error: null, local: false });
    const { update } = decision;
    if (update && !this.updatesTold.has(`${decision.variant}@${update.to}`)) {
      this.updatesTold.add(`${decision.variant}@${update.to}`);
      this.events.emit("update", { id: decision.variant, from: update.from, to: update.to, state: "available" });
    }
    if (decision.variant && (decision.target === "browser" || (decision.prefetch && this.prefetch))) {
      const model = this.modelAt(decision.variant, decision.version);
      if (model && this.browser.states.get(engineKey(model, this.kernelsFor(decision))).state !== State.Failed)
        this.load(model, this.kernelsFor(decision)).catch(() => {});
    }
  }

  // Loads a browser model; then the router is asked again: answers may go there now, or elsewhere if it failed.
  async load(model, kernels) {
    if (this.browser.states.get(engineKey(model, kernels)).state === State.Ready) return this.browser.ensure(model, kernels);
    try {
      const ready = await this.browser.ensure(model, kernels);
      const d = this.routes.latest;
      if (d?.target !== "browser" || d.version !== ready.version || backendOf(this.kernelsFor(d)) !== ready.backend) this.refresh();
      return ready;
    } catch (error) {
      this.refresh();
      throw error;
    }
  }

  // The kernels a decision's browser variant runs with: those the options force, else the CPU build where
  // the router says so, else the WebGPU set that suits the adapter (undefined: the engine picks).
  kernelsFor(decision) { return this.kernels ?? (decision?.backend === "cpu" ? "cpu" : undefined); }

  // The ready browser model for a decision. While a newer version of that variant loads, the older one
  // that is ready answers: the switch happens between answers.
  async browserFor(decision) {
    const model = this.modelAt(decision.variant, decision.version);
    if (!model) throw new EngineError(ErrorKind.NotLoaded, `${decision.variant} is not in the server's catalog any more`);
    const kernels = this.kernelsFor(decision);
    const wanted = this.browser.states.get(engineKey(model, kernels));
    const older = this.browser.ready(decision.variant);
    if (wanted.state !== State.Ready && wanted.state !== State.Failed && older?.backend === backendOf(kernels)) {
      this.load(model, kernels).catch(() => {});
      return older;
    }
    return this.load(model, kernels);
  }

  // When the router cannot be asked and has never answered this client: a model this browser holds and has
  // checked answers (ready, or the one last ready here, if its files are still cached).
  async decideLocally(error) {
    if (this.preference === "cloud_only") return null;
    let held = this.browser.ready();
    if (!held) {
      const last = remembered.lastReady(this.server, this.modelName());
      const model = last && this.modelAt(last.id, last.version);
      const cached = model && (await cachedVersions([model], self.location.origin).catch(() => []));
      held = cached?.some((c) => c.version === last.version) ? { ...last, backend: backendOf(last.kernels) } : null;
    }
    if (!held) return null;
    return { target: "browser", model: this.modelName(), variant: held.id, version: held.version, backend: held.backend,
             local: true, prefetch: false, cached: true, update: null, predictions: {},
             reasons: [{ code: "server_unreachable", message: `the server could not be asked (${error.message}); ` +
                         `${held.id} is in this browser and passed its check here` }] };
  }

  // What the router needs to know of one answer. The prompt is counted by the model's own tokenizer once
  // the browser engine holds it, and estimated (about 4 characters a token) before.
  // A constrained answer (a response_format, or tools it may call) compiles a grammar first.
  async answerNumbers(request) {
    const { messages, max_tokens, response_format } = request;
    const numbers = { maxTokens: max_tokens, structured: Boolean(response_format) || mayCallTools(request) };
    const counted = await this.browser.countTokens(messages).catch(() => null);  // busy or gone: estimate
    if (counted !== null) return { ...numbers, promptTokens: counted };
    const characters = messages.reduce((sum, m) => sum + String(m.content ?? "").length, 0);
    return { ...numbers, promptTokens: Math.ceil(characters / 4), promptTokensEstimated: true };
  }

  // Every model version that failed on this device: remembered ones, then this client's, once each.
  unreliable() {
    const byKey = new Map([...remembered.unreliable(), ...this.browser.failures()].map((u) => [`${u.id}@${u.version}`, u]));
    return [...byKey.values()].slice(-64);
  }

  hasFailed(id, version) { return this.browser.failures().some((f) => f.id === id && f.version === version); }

  engineFailed(entry, error) {
    this.browser.fail(entry.key, error, "answer");
    this.refresh();
  }

  // --- what is learnt and remembered -------------------------------------------------------------------

  // After each answer that ran on one path: how fast it really was. The browser's own speeds are kept for
  // the router, and the prediction's error goes to the server's metrics (numbers only, never the text).
  learnFrom(path, engine, stats, decision) {
    if (path === "browser" && engine) this.recordSpeed(this.modelAt(engine.id, engine.version), engine.kernels, stats);
    if (path === "cloud") remembered.recordCloudSpeed(this.server, this.modelName(), stats);
    const predicted = decision?.predictions?.[path];
    if (!predicted || !(stats.ttft_s > 0) || !(stats.decode_tokens_per_s > 0)) return;
    report(this.config.endpoints.outcome, {
      target: path, predicted: { ttft_s: predicted.ttft_s, tokens_per_s: predicted.tokens_per_s },
      actual: { ttft_s: stats.ttft_s, tokens_per_s: stats.decode_tokens_per_s } });
  }

  recordSpeed(model, kernels, stats) {
    if (model) remembered.recordSpeed(model, kernels === "cpu" ? CPU_KEY : this.device, kernels, stats);
  }

  rememberReady(entry) {
    const model = this.catalog.find((m) => m.id === entry.id);
    if (model) remembered.lastReady(this.server, model.model, { id: entry.id, version: entry.version, kernels: entry.kernels });
  }

  modelName() { return this.catalog.find((m) => m.model === this.modelOption || m.id === this.modelOption)?.model ?? this.catalog[0]?.model; }

  // The catalog entry of a variant at a version: the catalog's own, or an older one still in the cache
  // (the router keeps it when the catalog marks it compatible).
  modelAt(id, version) {
    const entry = this.catalog.find((m) => m.id === id);
    if (!entry || entry.version === version) return entry;
    return { ...entry, version, base_url: entry.base_url.replace(`/${entry.version}/`, `/${version}/`) };
  }
}

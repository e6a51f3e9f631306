// The chat page's controller: asks the router where answers run, loads (and self-checks) the browser
// engine when the router picks or prefetches a browser variant, and streams each answer from whichever
// client the decision names. When one path fails mid-answer, the other continues the same answer from
// the text already shown. Settings and URLs come from the server (#seam-config), never from constants.
import { CloudClient } from "./cloud_client.js";
import { ChatView } from "./chat_view.js";
import { WorkerEngine } from "./engine/client.js";
import { EngineError, ErrorKind, REQUEST_ERRORS } from "./engine/errors.js";
import { deleteOtherVersions } from "./engine/model_cache.js";
import { randomSeed } from "./engine/sampling.js";
import { CPU_KEY, adapterKey, askRouter, collectProbeReport } from "./probe.js";
import { remembered } from "./remembered.js";

const config = JSON.parse(document.getElementById("seam-config").textContent);
const view = new ChatView();
const cloud = new CloudClient(config.endpoints.chat);

let catalog = config.models;  // refreshed from the server before each routing
let engine = null;            // the worker starts only when a browser variant is wanted
let decision = null;          // the router's latest answer
let device = "none";          // this browser's adapter key (probe.js), which its measured speeds are kept under
let loading = null;           // {key, promise} of the variant being loaded or loaded
let loaded = null;            // {model, adapter} once the browser engine holds a checked model
let history = [];             // this conversation, as the chat template will see it
let current = null;           // the answer being streamed (has stop())
const failedHere = [];        // [{id, version, reason}] that failed in this page: not routed here again
const loadErrors = new Map(); // "id@version" -> the error it failed with, given again instead of retrying

// `?webgpu=compatibility` asks for a compatibility-mode adapter first (faster on CPU-only machines);
// `?kernels=software` or `?kernels=gpu` forces a kernel set (by default the one that suits the adapter);
// `?kernels=cpu` the CPU build (wasm SIMD).
const query = new URLSearchParams(location.search);
const featureLevel = query.get("webgpu") === "compatibility" ? "compatibility" : "core";
const kernels = ["software", "gpu", "cpu"].includes(query.get("kernels")) ? query.get("kernels") : undefined;
const browserEngine = () => (engine ??= new WorkerEngine(config.engine, { testHooks: config.testHooks, featureLevel, kernels }));
window.seam = {
  config,
  browserEngine,
  get decision() { return decision; },
  get loaded() { return loaded; },
  ...(config.testHooks ? { test: { loseDeviceAfter: (tokens) => browserEngine().loseDeviceAfter(tokens) } } : {}),
};

const ROUTE_LABEL = { browser: "This browser", cloud: "Server", none: "Nothing can answer" };
// The kernels a decision's browser variant runs with: those the page URL forces, else the CPU build where
// the router says so, else the WebGPU set that suits the adapter (undefined: the engine picks).
const kernelsFor = (d) => kernels ?? (d.backend === "cpu" ? "cpu" : undefined);
// Where this browser's speeds with those kernels are kept (remembered.js).
const speedKey = (kernelSet) => (kernelSet === "cpu" ? CPU_KEY : device);

async function refreshCatalog() {
  try {
    const response = await fetch(config.endpoints.catalog, { cache: "no-store" });
    if (response.ok) catalog = (await response.json()).models;
  } catch (error) { /* offline: keep the catalog we have */ }
}

// Asks the router where the next answer runs: on page load (for what to download), and before every
// answer with that answer's numbers (`request`: its messages, max_tokens and response_format).
async function route(request) {
  try {
    await refreshCatalog();
    const { model, preference } = view.settings();
    const report = await collectProbeReport({ models: catalog, model, preference,
                                              unreliable: unreliableHere(), clientId: remembered.clientId(),
                                              measured: (key) => remembered.measuredSpeeds(key), kernels,
                                              ...(request ? await answerNumbers(request) : {}) });
    decision = await askRouter(config.endpoints.route, report);
    device = adapterKey(report);
    window.seamLastReport = report;
    window.seamLastDecision = decision;
  } catch (error) {
    // The last decision stands: a page that holds the model keeps answering while the server is unreachable.
    view.showRoute({ target: "error" }, `could not ask the router: ${error.message}` +
                   (decision ? `; answering as last decided (${ROUTE_LABEL[decision.target]})` : ""));
    return;
  }
  const [why, ...others] = decision.reasons;
  const variant = decision.target === "browser" ? `${kernelsFor(decision) === "cpu" ? ", CPU" : ""} (${decision.variant})` : "";
  view.showRoute(decision, `${ROUTE_LABEL[decision.target]}${variant}: ${why.message}`);
  // When nothing in the catalog can run here, say why, each cause once.
  if (decision.target === "none" || (decision.target === "cloud" && !decision.variant && others.length))
    view.notice([why, ...others].map(told).join("; "), decision.target === "none" ? "error" : "info");
  if (decision.variant && (decision.target === "browser" || decision.prefetch))
    loadVariant(decision.variant, decision.version, kernelsFor(decision)).catch(() => {});
}

// A reason as the user reads it: the cause, and each variant's own words when they differ.
const told = (r) => (r.details ? `${r.message} (${r.details.join("; ")})` : r.message);

// What the router needs to know of one answer. The prompt is counted by the model's own tokenizer once
// the browser engine holds it, and estimated (about 4 characters a token) before.
async function answerNumbers({ messages, max_tokens, response_format }) {
  const numbers = { maxTokens: max_tokens, structured: Boolean(response_format) };
  try {
    if (loaded) return { ...numbers, promptTokens: await browserEngine().countTokens(messages) };
  } catch (error) { /* the engine is busy or gone: estimate */ }
  const characters = messages.reduce((sum, m) => sum + m.content.length, 0);
  return { ...numbers, promptTokens: Math.ceil(characters / 4), promptTokensEstimated: true };
}

// After each answer: how fast it really was. The browser's own speeds are kept for the router, and the
// prediction's error goes to the server's metrics (numbers only, never the text).
function learnFrom(path, stats, predictedFor) {
  if (path === "browser" && loaded) remembered.recordSpeed(loaded.model, speedKey(loaded.kernels), loaded.kernels, stats);
  const predicted = predictedFor?.predictions?.[path];
  if (!predicted || !(stats.ttft_s > 0) || !(stats.decode_tokens_per_s > 0)) return;
  fetch(config.endpoints.outcome, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ target: path, predicted: { ttft_s: predicted.ttft_s, tokens_per_s: predicted.tokens_per_s },
                           actual: { ttft_s: stats.ttft_s, tokens_per_s: stats.decode_tokens_per_s } }),
  }).catch(() => {});
}

// Every variant version that failed on this device, once each (remembered ones, then this page's).
function unreliableHere() {
  const byKey = new Map([...remembered.unreliable(), ...failedHere].map((u) => [`${u.id}@${u.version}`, u]));
  return [...byKey.values()].slice(-64);
}

// The catalog entry of a variant at a version: the catalog's own, or an older one still in the cache
// (the router keeps it when the catalog marks it compatible).
function modelAt(id, version) {
  const entry = catalog.find((m) => m.id === id);
  if (!entry || entry.version === version) return entry;
  return { ...entry, version, base_url: entry.base_url.replace(`/${entry.version}/`, `/${version}/`) };
}

function loadVariant(id, version, kernelSet) {
  const key = `${id}@${version}@${kernelSet === "cpu" ? "cpu" : "webgpu"}`;
  if (loadErrors.has(key)) return Promise.reject(loadErrors.get(key));
  if (loading?.key === key) return loading.promise;
  const model = modelAt(id, version);
  const promise = (async () => {
    const info = await browserEngine().load(model, (p) => {
      if (p.phase === "gpu") view.showLoadingStep(`Preparing ${model.id} on the GPU (compiling kernels, uploading weights)`);
      else if (p.phase === "cpu") view.showLoadingStep(`Preparing ${model.id} on this browser's CPU`);
      else view.showProgress(p);
    }, kernelSet === "cpu" ? { kernels: "cpu" } : {});
    // The self-check vouches for this adapter running this kernel set.
    const speeds = await selfCheck(model, `${info.adapter}, ${info.kernels} kernels`);
    loaded = { model, adapter: info.adapter, kernels: info.kernels };
    if (speeds) remembered.recordSpeed(model, speedKey(info.kernels), info.kernels, speeds);
    view.hideLoading();
    if (info.kernelsWhy)  // the GPU kernels did not fit this GPU's limits
      view.notice(`This browser runs ${model.id} with its software kernels: ${info.kernelsWhy}.`, "info");
    await deleteOtherVersions(model, location.origin).catch(() => 0);
    if (decision?.target !== "browser" || decision.version !== version || kernelsFor(decision) !== kernelSet) route();  // the router may send answers here now
    return loaded;
  })().catch((error) => {
    if (loading?.key === key) loading = null;
    view.hideLoading();
    failedHere.push({ id, version, reason: error.message.slice(0, 400) });
    loadErrors.set(key, error);
    view.notice(`The browser engine could not load ${model.id}: ${error.message}`, "error");
    route();  // the router now knows: answers go to the cloud if there is one
    throw error;
  });
  loading = { key, promise };
  return promise;
}

// The first time this device loads a model version, its answer to the catalog's check prompt must equal
// the catalog's golden tokens; a device that computes something else is not used for that version.
// Returns the speeds the check ran at, when it ran.
async function selfCheck(model, adapter) {
  if (remembered.selfCheckPassed(model, adapter)) return null;
  view.showLoadingStep(`Checking that this device computes ${model.id} correctly`);
  const check = model.self_check;
  const { tokens, stats } = await browserEngine().selfCheck(check);
  const golden = check.golden_token_ids;
  const passed = tokens.length === golden.length && tokens.every((t, i) => t === golden[i]);
  await fetch(config.endpoints.self_check, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id: model.id, version: model.version, adapter: adapter.slice(0, 200), passed, token_ids: tokens,
                           client_id: remembered.clientId() }),
  }).catch(() => {});  // the report is for the operator; the page decides either way
  if (passed) {
    remembered.selfCheckPassed(model, adapter, true);
    return stats;
  }
  const reason = `self-check failed: this device's answer to the check prompt (${tokens.join(" ")}) differs from ` +
                 `the catalog's (${golden.join(" ")})`;
  remembered.markUnreliable(model, reason);
  dropBrowserEngine();
  throw new EngineError(ErrorKind.SelfCheck, reason);
}

function dropBrowserEngine() {
  engine?.terminate();
  engine = null;
  loaded = null;
  loading = null;
}

const wants = () => view.settings().preference;
const cloudCanTakeOver = () => Boolean(decision?.predictions?.cloud) && wants() !== "local_only";
const browserCanTakeOver = () => Boolean(decision?.variant) && wants() !== "cloud_only" &&
  !failedHere.some((f) => f.id === decision.variant && f.version === decision.version);

async function pickPath(request) {
  await route(request);
  if (decision?.target === "browser") return "browser";
  if (decision?.target === "cloud") return "cloud";
  throw new EngineError(ErrorKind.NoEngine, decision ? decision.reasons.map(told).join("; ")
                                                     : "the router has not answered yet; reload the page");
}

async function clientFor(path) {
  if (path === "cloud") return { client: cloud, model: decision.model };
  await loadVariant(decision.variant, decision.version, kernelsFor(decision));
  return { client: browserEngine(), model: decision.variant };
}

// Streams one request into the answer view; `so.far` collects what was shown, whatever happens.
async function streamInto(answer, path, request, so) {
  const { client, model } = await clientFor(path);
  const stream = await client.chat.completions.create({ ...request, model, stream: true });
  current = stream;
  const result = { firstAt: null, usage: null, stats: null, finishReason: null };
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice?.delta?.content) {
      result.firstAt ??= performance.now();
      so.text += choice.delta.content;
      so.tokens = chunk.seam?.completion_tokens ?? so.tokens + 1;
      so.ids = so.ids && chunk.seam?.token_ids ? [...so.ids, ...chunk.seam.token_ids] : null;  // an upstream's are unknown
      answer.append(choice.delta.content);
    }
    if (choice?.finish_reason) result.finishReason = choice.finish_reason;
    if (chunk.usage) result.usage = chunk.usage;
    if (chunk.seam?.stats) result.stats = chunk.seam.stats;
  }
  result.stopped = Boolean(stream.stopped);
  return result;
}

// The request that makes the other path go on with the answer as shown so far (no text lost or repeated),
// from the same tokens, drawing its random numbers from where the first path stopped (same seed, later position).
function continuation(request, so) {
  if (!so.text) return request;
  const maxTokens = request.max_tokens ?? config.engine.request.default_max_tokens;
  return { ...request, messages: [...request.messages, { role: "assistant", content: so.text }],
           continue_final_message: true, max_tokens: Math.max(1, maxTokens - so.tokens),
           seed_position: (request.seed_position ?? 0) + so.tokens,
           ...(so.ids?.length === so.tokens ? { continue_token_ids: so.ids } : {}) };
}

// A failure on one path that the other can recover from, and the notice that says so.
function takeOver(path, error) {
  if (current?.stopped) return null;
  if (path === "browser" && cloudCanTakeOver() && error.kind === ErrorKind.Restarted)  // not the GPU's fault
    return { to: "cloud", notice: `${error.message}; the server took over the answer.` };
  if (path === "browser" && cloudCanTakeOver() && error instanceof EngineError && !REQUEST_ERRORS.has(error.kind)) {
    const model = loaded?.model || modelAt(decision.variant, decision.version);
    const what = loaded?.kernels === "cpu" ? "CPU engine" : "GPU";
    failedHere.push({ id: model.id, version: model.version, reason: error.message.slice(0, 400) });
    dropBrowserEngine();
    route();
    return { to: "cloud", notice: `This browser's ${what} failed (${error.message}); the server took over the answer.` };
  }
  if (path === "cloud" && browserCanTakeOver() && (error.status === undefined || error.status >= 500))
    return { to: "browser", notice: `The server could not answer (${error.message}); this browser took over the answer.` };
  return null;
}

// The stats of an answer streamed from the server, as the page saw them.
function cloudStats(started, { firstAt, usage }, endedAt) {
  const ttft = ((firstAt ?? endedAt) - started) / 1000;
  const decodeSeconds = (endedAt - (firstAt ?? endedAt)) / 1000;
  return { where: "cloud", backend: decision?.model || "server", ttft_s: ttft,
           prefill_tokens_per_s: usage && ttft > 0 ? usage.prompt_tokens / ttft : null,
           decode_tokens_per_s: usage && decodeSeconds > 0 ? (usage.completion_tokens - 1) / decodeSeconds : null };
}

async function send(text) {
  const conversation = history;
  let settings;
  try {
    settings = view.settings();
  } catch (error) {
    return view.notice(error.message, "error");
  }
  const { system, preference, model, ...sampling } = settings;
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...conversation,
                    { role: "user", content: text }];
  conversation.push({ role: "user", content: text });
  view.addUserMessage(text);
  const answer = view.addAnswer();
  view.setBusy(true);
  const so = { text: "", tokens: 0, ids: [] };
  // A seed for every answer, so that a path taking an answer over draws what the first path would have.
  const request = { messages, ...sampling, seed: sampling.seed ?? randomSeed() };
  try {
    const started = performance.now();
    let path = await pickPath(request);
    const predictedFor = decision;
    let result, handedOff = null;
    try {
      result = await streamInto(answer, path, request, so);
    } catch (error) {
      handedOff = takeOver(path, error);
      if (!handedOff) throw error;
      view.notice(handedOff.notice, "warning");
      path = handedOff.to;
      result = await streamInto(answer, path, continuation(request, so), so);
    }
    const stats = result.stats || cloudStats(started, result, performance.now());
    if (handedOff) stats.handoff = handedOff.to;
    else learnFrom(path, stats, predictedFor);
    answer.finish({ stats, usage: result.usage, finishReason: result.finishReason, stopped: result.stopped });
  } catch (error) {
    answer.fail(error);
  } finally {
    // A stopped or failed answer stays in the history with what was shown, as the user saw it.
    if (so.text) conversation.push({ role: "assistant", content: so.text });
    current = null;
    view.setBusy(false);
  }
}

function stop() {
  if (!current) return;
  current.stopped = true;
  current.stop();
}

view.restoreSettings(remembered.settings());
view.onSettingsChange((values) => remembered.settings(values));
view.onSend(send);
view.onStop(stop);
view.onNewChat(() => { stop(); history = []; view.clear(); });
view.onPreference(() => route());
view.onModel(() => route());
view.onResponseFormat();
route();

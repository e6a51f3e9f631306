// The chat page's controller: asks the router where answers run, loads the browser engine when the
// router picks (or prefetches) a browser variant, and streams each answer from whichever client the
// decision names. Settings and URLs come from the server (the #seam-config JSON), never from constants.
import { CloudClient } from "./cloud_client.js";
import { ChatView } from "./chat_view.js";
import { WorkerEngine } from "./engine/client.js";
import { askRouter, collectProbeReport } from "./probe.js";

const config = JSON.parse(document.getElementById("seam-config").textContent);
const view = new ChatView();
const cloud = new CloudClient(config.endpoints.chat);

let browserEngine = null;  // the worker starts only when a browser variant is wanted
let decision = null;       // the router's latest answer
let loading = null;        // {id, promise} of the variant being loaded or loaded
let loaded = null;         // {model, adapter} once the browser engine holds a model
let history = [];          // this conversation, as the chat template will see it
let current = null;        // the answer being streamed (has stop())

window.seam = {
  config,
  browserEngine: () => (browserEngine ??= new WorkerEngine(config.engine)),
  get decision() { return decision; },
  get loaded() { return loaded; },
};

const ROUTE_LABEL = { browser: "This browser", cloud: "Server", none: "Nothing can answer" };

async function route() {
  try {
    const report = await collectProbeReport({ models: config.models, preference: view.settings().preference });
    decision = await askRouter(config.endpoints.route, report);
    window.seamLastReport = report;
    window.seamLastDecision = decision;
  } catch (error) {
    decision = null;
    view.showRoute({ target: "error" }, `could not ask the router: ${error.message}`);
    return;
  }
  const [why, ...others] = decision.reasons;
  const variant = decision.target === "browser" ? ` (${decision.variant})` : "";
  view.showRoute(decision, `${ROUTE_LABEL[decision.target]}${variant}: ${why.message}`);
  // When nothing in the catalog can run here, say exactly why for each variant.
  if (decision.target === "none" || (decision.target === "cloud" && !decision.variant && others.length))
    view.notice([why, ...others].map((r) => r.message).join("; "), decision.target === "none" ? "error" : "info");
  if (decision.variant && (decision.target === "browser" || decision.prefetch)) loadVariant(decision.variant).catch(() => {});
}

function loadVariant(id) {
  if (loading?.id === id) return loading.promise;
  const model = config.models.find((m) => m.id === id);
  const promise = window.seam.browserEngine().load(model, (p) => {
    if (p.phase === "gpu") view.showLoadingStep(`Preparing ${model.id} on the GPU (compiling kernels, uploading weights)`);
    else view.showProgress(p);
  }).then((info) => {
    loaded = { model, adapter: info.adapter };
    view.hideLoading();
    if (decision?.target !== "browser") route();  // now cached: the router may send answers here
    return loaded;
  }, (error) => {
    loading = null;
    view.hideLoading();
    view.notice(`The browser engine could not load ${model.id}: ${error.message}`, "error");
    throw error;
  });
  loading = { id, promise };
  return promise;
}

async function pickClient() {
  if (decision?.target === "browser") {
    await loadVariant(decision.variant);
    return { client: window.seam.browserEngine(), model: decision.variant };
  }
  if (decision?.target === "cloud") return { client: cloud, model: decision.model };
  throw new Error(decision ? decision.reasons.map((r) => r.message).join("; ") : "the router has not answered yet");
}

// The stats of an answer streamed from the server, as the page saw them.
function cloudStats(started, firstAt, endedAt, usage) {
  const ttft = ((firstAt ?? endedAt) - started) / 1000;
  const decodeSeconds = (endedAt - (firstAt ?? endedAt)) / 1000;
  return { where: "cloud", backend: decision?.model || "server", ttft_s: ttft,
           prefill_tokens_per_s: usage && ttft > 0 ? usage.prompt_tokens / ttft : null,
           decode_tokens_per_s: usage && decodeSeconds > 0 ? (usage.completion_tokens - 1) / decodeSeconds : null };
}

async function send(text) {
  const conversation = history;
  const { system, preference, ...sampling } = view.settings();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...conversation,
                    { role: "user", content: text }];
  conversation.push({ role: "user", content: text });
  view.addUserMessage(text);
  const answer = view.addAnswer();
  view.setBusy(true);
  let content = "";
  try {
    const started = performance.now();
    const { client, model } = await pickClient();
    const stream = await client.chat.completions.create({ model, messages, stream: true, ...sampling });
    current = stream;
    let firstAt = null, usage = null, stats = null, finishReason = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) { firstAt ??= performance.now(); content += choice.delta.content; answer.append(choice.delta.content); }
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
      if (chunk.seam) stats = chunk.seam.stats;
    }
    answer.finish({ stats: stats || cloudStats(started, firstAt, performance.now(), usage), usage, finishReason,
                    stopped: Boolean(stream.stopped) });
  } catch (error) {
    answer.fail(error);
  } finally {
    // A stopped or failed answer stays in the history with what was shown, as the user saw it.
    if (content) conversation.push({ role: "assistant", content });
    current = null;
    view.setBusy(false);
  }
}

function stop() {
  if (!current) return;
  current.stopped = true;
  current.stop();
}

view.onSend(send);
view.onStop(stop);
view.onNewChat(() => { stop(); history = []; view.clear(); });
view.onPreference(route);
route();

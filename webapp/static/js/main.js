// The chat page: a client of the Seam client package (webapp/client/), imported from the server's stable
// URL for it as any other page would. This file only wires the view (chat_view.js) to the client's public
// API: settings in, answers and events out.
import { Seam } from "/client/index.js";
import { ChatView } from "./chat_view.js";

const view = new ChatView();
const ROUTE_LABEL = { browser: "This browser", cloud: "Server", none: "Nothing can answer" };
const SETTINGS_KEY = "seam.settings";  // the page's own settings, kept across visits

// `?webgpu=compatibility` asks for a compatibility-mode adapter first (faster on CPU-only machines);
// `?kernels=software` or `?kernels=gpu` forces a kernel set (by default the one that suits the adapter);
// `?kernels=cpu` the CPU build (wasm SIMD).
const query = new URLSearchParams(location.search);
const featureLevel = query.get("webgpu") === "compatibility" ? "compatibility" : "core";
const kernels = ["software", "gpu", "cpu"].includes(query.get("kernels")) ? query.get("kernels") : undefined;
// `?engine=own` gives this tab an engine of its own instead of the one this origin's tabs share.
const sharedEngine = query.get("engine") !== "own";
// `?threads=N` runs the CPU build on N threads (by default every core, where the page is cross-origin isolated).
const cpuThreads = /^[1-9][0-9]*$/.test(query.get("threads") ?? "") ? Number(query.get("threads")) : undefined;

// The app shell for offline visits (router/shell.py): after this visit, the page opens and answers in this
// browser while the server is unreachable. A browser that refuses service workers only loses that.
navigator.serviceWorker?.register("/sw.js").catch((error) => console.info(`no offline page: ${error.message}`));

let history = [];     // this conversation, as the chat template will see it
let stopping = null;  // the AbortController of the answer being streamed

const keptSettings = () => { try { return JSON.parse(localStorage.getItem(SETTINGS_KEY)) ?? {}; } catch (e) { return {}; } };
view.restoreSettings(keptSettings());
view.onSettingsChange((values) => { try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(values)); } catch (e) { /* private window */ } });

const { model, preference } = view.choice();
const seam = await Seam.connect({ server: location.origin, model, preference, kernels, featureLevel, sharedEngine,
                                  cpuThreads }).catch((error) => {
  view.showRoute({ target: "error" }, error.message);
  throw error;
});
if (seam.test) window.seam = seam;  // the test hook (the server runs with SEAM_TEST_HOOKS): the same public API

// A reason as a person reads it: the cause, and each variant's own words when they differ.
const told = (r) => (r.details ? `${r.message} (${r.details.join("; ")})` : r.message);
const onCpu = (d) => (kernels ?? (d.backend === "cpu" ? "cpu" : undefined)) === "cpu";

function showDecision({ decision, error, local }) {
  if (error) {
    if (local && decision)  // the server is unreachable, and this browser holds a checked model
      return view.showRoute(decision, `This browser (${decision.variant}): the server is unreachable, so the answer is ` +
                                      `local, from a model this browser holds and has checked (${error})`);
    const standing = !decision ? "" : local ? `; answering in this browser with ${decision.variant}, which it holds and has checked`
                                            : `; answering as last decided (${ROUTE_LABEL[decision.target]})`;
    return view.showRoute({ target: "error" }, `could not ask the router: ${error}${standing}`);
  }
  const [why, ...others] = decision.reasons;
  const variant = decision.target === "browser" ? `${onCpu(decision) ? ", CPU" : ""} (${decision.variant})` : "";
  view.showRoute(decision, `${ROUTE_LABEL[decision.target]}${variant}: ${why.message}`);
  // When nothing in the catalog can run here, say why, each cause once.
  if (decision.target === "none" || (decision.target === "cloud" && !decision.variant && others.length))
    view.notice([why, ...others].map(told).join("; "), decision.target === "none" ? "error" : "info");
}

function showEngine(entry) {
  if (entry.state === "loading") view.showLoadingStep(entry.phase === "cpu" ? `Preparing ${entry.id} on this browser's CPU`
                                                      : `Preparing ${entry.id} on the GPU (compiling kernels, uploading weights)`);
  else if (entry.state === "checking") view.showLoadingStep(`Checking that this device computes ${entry.id} correctly`);
  else if (entry.state === "ready") {
    view.hideLoading();
    if (entry.kernelsWhy)  // the GPU kernels did not fit this GPU's limits
      view.notice(`This browser runs ${entry.id} with its software kernels: ${entry.kernelsWhy}.`, "info");
  } else if (entry.state === "failed" && entry.during === "load") {
    view.hideLoading();
    view.notice(`The browser engine could not load ${entry.id}: ${entry.reason}`, "error");
  }
}

seam.on("decision", showDecision);
seam.on("engine", showEngine);
seam.on("progress", (p) => view.showProgress(p));
seam.on("handover", (h) => view.notice(h.message, "warning"));

async function send(text) {
  const conversation = history;
  let settings;
  try {
    settings = view.settings();
  } catch (error) {
    return view.notice(error.message, "error");
  }
  const { system, preference: _preference, model: _model, ...sampling } = settings;
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...conversation,
                    { role: "user", content: text }];
  conversation.push({ role: "user", content: text });
  view.addUserMessage(text);
  const answer = view.addAnswer();
  view.setBusy(true);
  stopping = new AbortController();
  let shown = "";
  try {
    const stream = await seam.chat.completions.create({ messages, ...sampling, stream: true }, { signal: stopping.signal });
    let last = null;
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta?.content;
      if (piece) { shown += piece; answer.append(piece); }
      last = chunk;
    }
    const { stats, handover, stopped } = last.seam;
    answer.finish({ stats: { ...(stats ?? { where: last.seam.target, ttft_s: 0 }), handoff: handover?.to },
                    usage: last.usage, finishReason: last.choices[0].finish_reason, stopped });
  } catch (error) {
    answer.fail(error);
  } finally {
    // A stopped or failed answer stays in the history with what was shown, as the user saw it.
    if (shown) conversation.push({ role: "assistant", content: shown });
    stopping = null;
    view.setBusy(false);
  }
}

view.onSend(send);
view.onStop(() => stopping?.abort());
view.onNewChat(() => { stopping?.abort(); history = []; view.clear(); });
view.onPreference(() => seam.configure({ preference: view.choice().preference }));
view.onModel(() => seam.configure({ model: view.choice().model }));
view.onResponseFormat();

// Everything the chat page draws. main.js wires it to the Seam client; this file only touches the DOM.

const $ = (id) => document.getElementById(id);
// The settings a person sets once and expects to find again.
const KEPT_SETTINGS = ["model", "preference", "system", "temperature", "top-p", "max-tokens", "seed", "response-format", "json-schema"];
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.ceil(seconds % 60)} s`;
}

// "this browser, CPU (wasm SIMD, 2 threads)", or with why it ran on one: "(wasm SIMD, 1 thread: why)".
const cpuWhere = (stats) => (stats.threads_why ? stats.adapter.replace(/\)$/, `: ${stats.threads_why})`) : stats.adapter);

export function formatStats(stats, usage) {
  const where = stats.where !== "browser" ? `server · ${stats.backend || "cloud"}`
    : stats.kernels === "cpu" ? cpuWhere(stats)
    : `browser · ${stats.adapter} · ${stats.kernels} kernels`;
  const handoff = { cloud: "browser, then ", browser: "server, then " }[stats.handoff] || "";
  const parts = [handoff + where, `first token ${stats.ttft_s.toFixed(2)} s`];
  if (stats.prefill_tokens_per_s) parts.push(`prefill ${stats.prefill_tokens_per_s.toFixed(1)} tok/s`);
  if (stats.decode_tokens_per_s) parts.push(`decode ${stats.decode_tokens_per_s.toFixed(1)} tok/s`);
  if (stats.engine_host === "shared") parts.push(`engine shared by ${stats.tabs} tab${stats.tabs === 1 ? "" : "s"}`);
  if (stats.engine_host === "dedicated") parts.push(`this tab's own engine${stats.engine_host_why ? ` (${stats.engine_host_why})` : ""}`);
  if (usage) parts.push(`${usage.completion_tokens} tokens`);
  return parts.join(" · ");
}

class AnswerView {
  constructor(element) {
    this.element = element;
    this.content = element.querySelector(".content");
  }

  append(text) { this.content.textContent += text; this.element.scrollIntoView({ block: "end" }); }

  finish({ stats, usage, finishReason, stopped }) {
    this.element.dataset.state = stopped ? "stopped" : "done";
    this.element.dataset.where = stats.where;
    if (stats.handoff) this.element.dataset.handoff = `${stats.handoff === "cloud" ? "browser" : "cloud"}-to-${stats.handoff}`;
    this.element.dataset.finishReason = finishReason || "";
    const line = document.createElement("div");
    line.className = "stats";
    line.textContent = formatStats(stats, usage) + (stopped ? " · stopped" : finishReason === "length" ? " · hit max tokens" : "");
    this.element.append(line);
  }

  fail(error) {
    this.element.dataset.state = "error";
    this.element.dataset.errorKind = error.kind || error.name || "Error";
    this.element.classList.add("error");
    const line = document.createElement("div");
    line.className = "stats";
    line.textContent = `${error.kind || error.name}: ${error.message}`;
    this.element.append(line);
  }
}

export class ChatView {
  constructor() {
    this.messages = $("messages");
    this.empty = $("empty");
  }

  // Which model, and where answers may run.
  choice() { return { model: $("model").value || undefined, preference: $("preference").value }; }

  // The request settings; throws when the schema box does not hold JSON.
  settings() {
    const number = (id) => ($(id).value === "" ? undefined : Number($(id).value));
    return { model: $("model").value || undefined, preference: $("preference").value, system: $("system").value.trim(),
             temperature: number("temperature"),
             top_p: number("top-p"), max_tokens: number("max-tokens"), seed: number("seed"),
             response_format: this.responseFormat() };
  }

  responseFormat() {
    const type = $("response-format").value;
    if (type !== "json_schema") return { type };
    try {
      return { type, json_schema: { name: "answer", schema: JSON.parse($("json-schema").value) } };
    } catch (error) {
      throw new Error(`the JSON schema in Settings is not valid JSON (${error.message}); fix it or pick another answer format`);
    }
  }

  onSend(handler) {
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("prompt").value.trim();
      if (!text || $("send").disabled) return;
      $("prompt").value = "";
      handler(text);
    });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
    });
  }

  // The settings as they stand, each time one changes: `handler({id: value})`.
  onSettingsChange(handler) {
    const kept = () => handler(Object.fromEntries(KEPT_SETTINGS.map((id) => [id, $(id).value])));
    $("settings").addEventListener("input", kept);
    $("settings").addEventListener("change", kept);
  }

  // Puts back settings kept from an earlier visit (fields this page no longer has are ignored).
  restoreSettings(values) {
    const fits = (field, value) => field.tagName !== "SELECT" || [...field.options].some((o) => o.value === value);
    for (const id of KEPT_SETTINGS) if (typeof values[id] === "string" && fits($(id), values[id])) $(id).value = values[id];
    $("schema-field").hidden = $("response-format").value !== "json_schema";
  }

  onStop(handler) { $("stop").addEventListener("click", handler); }
  onNewChat(handler) { $("new-chat").addEventListener("click", handler); }
  onPreference(handler) { $("preference").addEventListener("change", handler); }
  onModel(handler) { $("model").addEventListener("change", handler); }
  onResponseFormat() {
    $("response-format").addEventListener("change", () => { $("schema-field").hidden = $("response-format").value !== "json_schema"; });
  }

  setBusy(busy) {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    document.body.dataset.busy = busy ? "yes" : "no";
  }

  clear() {
    this.messages.replaceChildren(this.empty);
    this.empty.hidden = false;
    this.notice(null);
  }

  addUserMessage(text) {
    this.empty.hidden = true;
    const element = this.bubble("user");
    element.querySelector(".content").textContent = text;
  }

  addAnswer() {
    const element = this.bubble("assistant");
    element.dataset.state = "streaming";
    return new AnswerView(element);
  }

  bubble(role) {
    const element = document.createElement("article");
    element.className = `message ${role}`;
    const content = document.createElement("div");
    content.className = "content";
    element.append(content);
    this.messages.append(element);
    return element;
  }

  showRoute(decision, text) {
    const out = $("route");
    out.dataset.target = decision.target;
    out.dataset.reason = decision.reasons?.[0]?.code || "";
    out.textContent = text;
  }

  showProgress({ loaded, total, etaSeconds, fromCache }) {
    $("loading").hidden = false;
    $("loading-label").textContent = fromCache ? "Loading the model from this browser's cache" : "Downloading the model";
    const progress = $("progress");
    progress.max = total;
    progress.value = loaded;
    const eta = loaded < total && etaSeconds ? ` · ${formatDuration(etaSeconds)} left` : "";
    $("progress-text").textContent = `${mb(loaded)} of ${mb(total)} · ${Math.floor((100 * loaded) / total)}%${eta}`;
  }

  showLoadingStep(label) {
    $("loading").hidden = false;
    $("loading-label").textContent = label;
  }

  hideLoading() { $("loading").hidden = true; }

  // An "info" notice does not cover a warning or an error the user has not seen go: what went wrong
  // matters more than where the next answer runs (the route line says that anyway).
  notice(text, kind = "info") {
    const element = $("notice");
    if (text && kind === "info" && !element.hidden && element.dataset.kind !== "info") return;
    element.hidden = !text;
    element.textContent = text || "";
    element.dataset.kind = kind;
  }
}

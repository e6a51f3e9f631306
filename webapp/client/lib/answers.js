// One answer, wherever it runs. It is routed with its own numbers, streamed from the path the decision
// names (the browser engine or the server), and when that path fails mid-answer the other one goes on
// with the same answer: from the tokens already given, drawing its random numbers from the same seed at
// the position reached, so no text is lost or repeated. Its chunks are OpenAI's; the last one says where
// the answer ran and why (`seam`: target, backend, variant, reasons, any handover and at which token,
// stats), with the answer's usage.
import { backendOf } from "./engine_states.js";
import { EngineError, ErrorKind, REQUEST_ERRORS } from "./engine/errors.js";
import { randomSeed } from "./engine/sampling.js";

// A reason as a person reads it: the cause, and each variant's own words when they differ.
export const reasonText = (r) => (r.details ? `${r.message} (${r.details.join("; ")})` : r.message);

export class Answer {
  // `seam`: the client (its decide, browser engine, cloud client, catalog and settings); `request`: OpenAI's
  // chat request; `signal`: an AbortSignal that stops it.
  constructor(seam, request, signal) {
    this.seam = seam;
    // A seed for every answer, so that a path taking the answer over draws what the first would have.
    this.request = { ...request, seed: request.seed ?? randomSeed() };
    this.mayCall = mayCallTools(request);
    delete this.request.stream;
    this.signal = signal;
    this.so = { text: "", tokens: 0, ids: [] };  // what was given so far, whatever happens
    this.handover = null;
    this.id = `chatcmpl-seam-${randomSeed().toString(16)}${Date.now().toString(16)}`;
    this.created = Math.floor(Date.now() / 1000);
    this.stopped = Boolean(signal?.aborted);
    signal?.addEventListener("abort", () => { this.stopped = true; this.source?.stop(); });
  }

  // Routes the answer and opens its first path: the errors a caller should get before any chunk (no
  // engine can answer, a request the engine refuses) come from here.
  async start() {
    this.started = performance.now();
    const { decision, error } = await this.seam.decide(this.request);
    this.decision = decision;
    this.routeError = error;
    if (this.stopped) return;
    this.path = this.firstPath();
    await this.open(this.path, this.request).catch((failure) => this.takeOver(failure));
  }

  firstPath() {
    const d = this.decision;
    if (d?.target === "browser" || d?.target === "cloud") return d.target;
    const why = d ? d.reasons.map(reasonText).join("; ")
                  : `the router could not be asked (${this.routeError?.message}) and this browser holds no checked model`;
    throw new EngineError(ErrorKind.NoEngine, why);
  }

  async open(path, request) {
    this.firstAt = null;
    if (path === "cloud") {
      this.source = await this.seam.cloud.create({ ...request, model: this.decision.model, stream: true });
      this.engine = null;
    } else {
      this.engine = await this.seam.browserFor(this.decision);
      this.source = await this.seam.browser.answer(this.engine, { ...request, model: this.engine.id });
    }
    if (this.stopped) this.source.stop();
  }

  // A failure that the other path can recover from: it goes on with the answer; any other is thrown.
  async takeOver(error) {
    const to = this.stopped ? null : this.recoveryFor(error);
    if (!to) throw error;
    const from = this.path;
    const what = this.engine?.kernels === "cpu" ? "CPU engine" : "GPU";
    const message = from === "cloud" ? `The server could not answer (${error.message}); this browser took over the answer.`
      : error.kind === ErrorKind.Restarted ? `${error.message}; the server took over the answer.`
      : `This browser's ${what} failed (${error.message}); the server took over the answer.`;
    this.handover = { from, to, at_token: this.so.tokens, reason: error.message, kind: error.kind ?? error.name };
    this.seam.events.emit("handover", { ...this.handover, message });
    this.path = to;
    await this.open(to, this.continuation());
  }

  // Where an answer that failed on its path can go on, or null. A browser failure that is not the request's
  // own marks that model failed here (the router hears of it, and the next answers go to the server).
  recoveryFor(error) {
    const seam = this.seam, d = this.decision;
    if (this.path === "browser") {
      if (!(error instanceof EngineError) || REQUEST_ERRORS.has(error.kind)) return null;
      if (error.kind !== ErrorKind.Restarted && this.engine) seam.engineFailed(this.engine, error);
      return d.predictions?.cloud && seam.preference !== "local_only" ? "cloud" : null;
    }
    const serverFailed = error.status === undefined || error.status >= 500;
    return serverFailed && d.variant && seam.preference !== "cloud_only" && !seam.hasFailed(d.variant, d.version) ? "browser" : null;
  }

  // The request that makes the other path go on with the answer as given so far, from the same tokens,
  // drawing its random numbers from where the first path stopped (same seed, later position).
  continuation() {
    const { request, so } = this;
    if (!so.text) return request;
    const maxTokens = request.max_tokens ?? this.seam.config.engine.request.default_max_tokens;
    return { ...request, messages: [...request.messages, { role: "assistant", content: so.text }],
             continue_final_message: true, max_tokens: Math.max(1, maxTokens - so.tokens),
             seed_position: (request.seed_position ?? 0) + so.tokens,
             ...(so.ids?.length === so.tokens ? { continue_token_ids: so.ids } : {}) };
  }

  // The answer's chunks: the role, each piece of text (with its tokens), then one last chunk with the
  // finish reason, the usage and where it ran.
  async *chunks() {
    const end = { finish: null, usage: null, stats: null };
    yield this.chunk({ role: "assistant", content: "" });
    while (this.source) {
      try {
        for await (const chunk of this.source) {
          const choice = chunk.choices[0], delta = choice?.delta ?? {};
          // A piece of the answer: text, or tokens that show no text yet (the server's last piece may end inside a
          // UTF-8 character), or pieces of tool calls; a final chunk's whole list of token_ids (the worker's) has
          // no completion_tokens.
          const counted = chunk.seam?.token_ids?.length && chunk.seam.completion_tokens !== undefined;
          if (delta.content || counted || delta.tool_calls) {
            this.firstAt ??= performance.now();
            const content = delta.content ?? "";
            // with tools, a piece's own text (calls' markers and all) comes once, in seam.text of its first chunk
            const raw = chunk.seam?.text;
            if (raw !== undefined || (!this.mayCall && (delta.content || counted))) this.take(raw ?? content, chunk.seam);
            yield this.chunk({ content, ...(delta.tool_calls ? { tool_calls: delta.tool_calls } : {}) }, null,
                             { seam: { completion_tokens: this.so.tokens, token_ids: chunk.seam?.token_ids } });
          }
          if (choice?.finish_reason) end.finish = choice.finish_reason;
          if (chunk.usage) end.usage = chunk.usage;
          if (chunk.seam?.stats) end.stats = chunk.seam.stats;
        }
        break;
      } catch (error) {
        await this.takeOver(error);
      }
    }
    yield this.last(end, performance.now());
  }

  // `text`: the piece as the model wrote it (with tools, calls' markers too), which a handover goes on from.
  take(text, seam) {
    const so = this.so;
    so.text += text;
    so.tokens = this.handover && seam?.completion_tokens ? this.handover.at_token + seam.completion_tokens
                                                           : seam?.completion_tokens ?? so.tokens + 1;
    so.ids = so.ids && seam?.token_ids ? [...so.ids, ...seam.token_ids] : null;  // an upstream's are unknown
  }

  chunk(delta, finish = null, extra = {}) {
    return { id: this.id, object: "chat.completion.chunk", created: this.created, model: this.modelName(),
             choices: [{ index: 0, delta, finish_reason: finish }], ...extra };
  }

  modelName() { return this.request.model ?? this.decision?.model ?? this.engine?.id ?? "seam"; }

  last({ finish, usage, stats }, endedAt) {
    const handedOver = this.handover?.at_token ?? 0;
    const answerUsage = usage && { prompt_tokens: usage.prompt_tokens - handedOver, completion_tokens: this.so.tokens,
                                   total_tokens: usage.prompt_tokens - handedOver + this.so.tokens };
    const ranStats = stats ?? (this.path === "cloud" ? this.cloudStats(usage, endedAt) : null);
    const finishReason = this.stopped ? "abort" : finish ?? "stop";
    if (!this.handover && !this.stopped && ranStats) this.seam.learnFrom(this.path, this.engine, ranStats, this.decision);
    return { ...this.chunk({}, finishReason), usage: answerUsage, seam: this.where(ranStats) };
  }

  // Where the answer ran and why.
  where(stats) {
    const d = this.decision;
    const browser = this.path === "browser" && this.engine;
    return { target: this.path ?? null, backend: browser ? backendOf(this.engine.kernels) : this.path === "cloud" ? "server" : null,
             variant: browser ? this.engine.id : null, version: browser ? this.engine.version : null,
             reasons: d?.reasons ?? [], ...(this.routeError ? { route_error: this.routeError.message } : {}),
             handover: this.handover, stats, token_ids: this.so.ids, stopped: this.stopped };
  }

  // The stats of an answer streamed from the server, as the client saw them (network included).
  cloudStats(usage, endedAt) {
    const first = this.firstAt ?? endedAt;
    const ttft = (first - this.started) / 1000, decodeSeconds = (endedAt - first) / 1000;
    return { where: "cloud", backend: this.decision?.model || "server", ttft_s: ttft,
             prefill_tokens_per_s: usage && ttft > 0 ? usage.prompt_tokens / ttft : null,
             decode_tokens_per_s: usage && decodeSeconds > 0 ? (usage.completion_tokens - 1) / decodeSeconds : null };
  }
}

// Whether an answer may call tools (and so is constrained by a grammar, and read for calls).
export const mayCallTools = ({ tools, tool_choice: choice }) => Array.isArray(tools) && tools.length > 0 && choice !== "none";

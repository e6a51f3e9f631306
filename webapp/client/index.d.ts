// The public API of the Seam client (seam-client). Plain ES modules, no build step: import index.js from
// the package, or from a Seam server at /client/index.js.
//
//   const seam = await Seam.connect({ server: "https://seam.example.com/", preference: "auto" });
//   const stream = await seam.chat.completions.create({ messages, stream: true });
//   for await (const chunk of stream) show(chunk.choices[0]?.delta?.content ?? "");

/** Where answers may run: the router decides per answer within this. */
export type Preference = "auto" | "fastest" | "local_only" | "cloud_only";
/** A WebGPU kernel set ("software" for software adapters, "gpu"), or the CPU build (wasm SIMD). */
export type Kernels = "software" | "gpu" | "cpu";
/** What a browser model runs on. */
export type Backend = "webgpu" | "cpu";

export interface ConnectOptions {
  /** The Seam server's URL (default: this page's origin). A page of another origin needs the server to allow it (SEAM_ALLOWED_ORIGINS). */
  server?: string;
  /** A model name from the server's catalog, or one variant's id (default: the catalog's first model). */
  model?: string;
  /** Where answers may run (default "auto"). */
  preference?: Preference;
  /** Force a kernel set (default: the router's backend, and the WebGPU set that suits the adapter). */
  kernels?: Kernels;
  /** Which WebGPU adapter to ask for first (default "core"). */
  featureLevel?: "core" | "compatibility";
  /** Download the browser model in the background while the server answers, when the router advises it (default true). */
  prefetch?: boolean;
  /** Run browser models in one engine shared by this origin's tabs (a SharedWorker: one download, load and
   * self-check, one copy in memory) where the browser can (default true); false gives this tab its own. */
  sharedEngine?: boolean;
  /** Threads the CPU build may run on (default: every core, up to the server's policy). More than one needs a
   * cross-origin isolated page (COOP/COEP headers, so SharedArrayBuffer exists); elsewhere it runs on one. */
  cpuThreads?: number;
}

export type Role = "system" | "user" | "assistant" | "tool";
/** OpenAI's function call, as an answer gives it (arguments: a JSON string). */
export interface ToolCall { id: string; type: "function"; function: { name: string; arguments: string }; }
export interface ChatMessage {
  role: Role;
  /** null (or absent) only in an assistant message with tool_calls. */
  content: string | null;
  tool_calls?: ToolCall[];
  /** A tool message: the id of the call it answers. */
  tool_call_id?: string;
}
/** OpenAI's function tool: `parameters` is the JSON schema its arguments must follow. */
export interface Tool { type: "function"; function: { name: string; description?: string; parameters?: Record<string, unknown> }; }

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: { name?: string; schema: Record<string, unknown>; strict?: boolean } };

/** OpenAI's chat request, with the fields both paths take. */
export interface ChatCompletionRequest {
  messages: ChatMessage[];
  model?: string;
  stream?: boolean;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  /** 0 to 2^32 - 1. Every answer has one (drawn when absent), so a handover draws what the first path would have. */
  seed?: number;
  stop?: string | string[];
  response_format?: ResponseFormat;
  /** Go on with the last (assistant) message instead of answering anew (vLLM's extension). */
  continue_final_message?: boolean;
  /** Functions the answer may call; answered by the server's engine so far (the browser's is to come). */
  tools?: Tool[];
  tool_choice?: "none" | "auto" | "required" | { type: "function"; function: { name: string } };
  parallel_tool_calls?: boolean;
}

export interface RequestOptions {
  /** Stops the answer: it ends with finish_reason "abort" and the text given so far. */
  signal?: AbortSignal;
}

/** A reason's code: the router's (router/reasons.py says when each is given), then the client's own. */
export type ReasonCode =
  | "no_model" | "preference_cloud" | "preference_local" | "local_impossible" | "browser_cannot_run" | "only_browser"
  | "browser_too_slow" | "update_available" | "not_downloaded" | "battery_saver" | "server_busy" | "cloud_faster"
  | "browser_faster" | "compatible_cached" | "cached" | "no_webgpu" | "missing_feature" | "limit_too_small"
  | "low_memory" | "no_cpu_build" | "no_wasm_simd" | "wasm_heap_too_small" | "too_few_cores" | "unreliable"
  | "no_storage" | "context_too_long" | "cloud_unavailable"
  | "server_unreachable";  // the client's: the server could not be asked, and this browser holds a checked model

export interface Reason {
  code: ReasonCode;
  message: string;
  /** Each variant's own words, where they differ. */
  details?: string[];
}

export interface Prediction { ttft_s: number; tokens_per_s: number; source?: "measured" | "calibrated" | "predicted"; }

/** The router's decision (router/schemas/route-decision.v1.json), or the client's own while the server cannot be asked (`local`). */
export interface Decision {
  target: "browser" | "cloud" | "none";
  model: string | null;
  variant: string | null;
  version: string | null;
  backend: Backend | null;
  reasons: Reason[];
  predictions: { browser?: Prediction | null; cloud?: Prediction | null };
  prefetch: boolean;
  cached: boolean;
  update: { from: string; to: string } | null;
  local?: boolean;
}

export interface Handover {
  from: "browser" | "cloud";
  to: "browser" | "cloud";
  /** How many tokens of the answer the first path gave before the other took over. */
  at_token: number;
  reason: string;
  kind: string;
}

export interface AnswerStats {
  where: "browser" | "cloud";
  ttft_s: number;
  prefill_tokens_per_s: number | null;
  decode_tokens_per_s: number | null;
  adapter?: string;
  kernels?: Kernels;
  backend?: string;
  grammar_ms_per_token?: number;
  /** The CPU build's threads, and why it ran on one where it did (no cross-origin isolation, one core, ...). */
  threads?: number;
  threads_why?: string | null;
  /** A browser answer's engine: shared by this origin's tabs (`tabs` connected), or this tab's own and why. */
  engine_host?: "shared" | "dedicated";
  engine_host_why?: string | null;
  tabs?: number;
}

/** Where an answer ran and why: on the last chunk of a stream, and on a completion. */
export interface AnswerInfo {
  target: "browser" | "cloud" | null;
  backend: Backend | "server" | null;
  variant: string | null;
  version: string | null;
  reasons: Reason[];
  /** Set when the router could not be asked for this answer. */
  route_error?: string;
  handover: Handover | null;
  stats: AnswerStats | null;
  /** The answer's tokens, where the path gives them (the browser engine, a Seam server). */
  token_ids: number[] | null;
  stopped: boolean;
}

export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number; }
export type FinishReason = "stop" | "length" | "abort" | "tool_calls";
/** A piece of a tool call in a stream: its opening (index, id, name), then its arguments piece by piece. */
export interface ToolCallDelta { index: number; id?: string; type?: "function"; function: { name?: string; arguments: string }; }

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: { index: number; delta: { role?: "assistant"; content?: string; tool_calls?: ToolCallDelta[] };
             finish_reason: FinishReason | null }[];
  /** The last chunk's. */
  usage?: Usage | null;
  /** On text chunks: {completion_tokens, token_ids}; on the last chunk: where the answer ran. */
  seam?: AnswerInfo | { completion_tokens: number; token_ids?: number[] };
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: { index: number; message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[] };
             finish_reason: FinishReason }[];
  usage: Usage | null;
  seam: AnswerInfo;
}

export type EngineState = "none" | "downloading" | "loading" | "checking" | "ready" | "failed" | "retired";

/** One model version on one backend in the browser engine, keyed id@version@backend. */
export interface EngineEntry {
  key: string;
  id: string;
  version: string;
  backend: Backend;
  state: EngineState;
  adapter?: string;
  kernels?: Kernels;
  kernelsWhy?: string | null;
  /** The CPU build's threads (kernels "cpu"), and why one where it is one. */
  threads?: number;
  threadsWhy?: string | null;
  /** Why it failed (state "failed"), and when: loading it, or answering. */
  reason?: string;
  kind?: string;
  during?: "load" | "answer";
  phase?: "gpu" | "cpu";
}

export interface Status {
  api_version: number;
  server: { url: string; reachable: boolean; error: string | null };
  model: string | null;
  preference: Preference;
  /** The latest decision (the router's, or the client's own while the server cannot be asked). */
  decision: Decision | null;
  /** The probe report the latest decision was asked with. */
  report: Record<string, unknown> | null;
  /** The browser model answers go to, once one is ready. */
  engine: EngineEntry | null;
  engines: EngineEntry[];
  /** Where this tab's browser models run, from the first load on: an engine shared by this origin's tabs, or
   * this tab's own (`why` says why it is not shared). */
  engine_host: EngineHost | null;
  /** Answers under way. */
  answering: number;
}

export interface EngineHost {
  kind: "starting" | "shared" | "dedicated";
  why: string | null;
  /** Tabs connected to the host when this tab joined. */
  tabs: number;
}

export interface DownloadProgress {
  key: string;
  id: string;
  version: string;
  phase: "download";
  loaded: number;
  total: number;
  file: string | null;
  etaSeconds: number | null;
  fromCache: boolean;
}

export interface SeamEvents {
  /** Each decision (`error`: the router could not be asked, and this decision stands or was made here). */
  decision: { decision: Decision | null; error: string | null; local: boolean };
  progress: DownloadProgress;
  /** Each step of a browser model's lifecycle. */
  engine: EngineEntry;
  selfcheck: { id: string; version: string; adapter: string; passed: boolean; tokens: number[]; golden: number[] };
  /** A path failed mid-answer and the other took over; `message` is a sentence for the user. */
  handover: Handover & { message: string };
  /** A new version: "available" (the router says so), "ready" (checked; answers go to it, the old one's files are gone). */
  update: { id: string; from: string; to: string; state: "available" | "ready" };
}

export interface ModelInfo {
  id: string;
  object: "model";
  created: number;
  owned_by: "seam";
  /** The server answers with it. */
  cloud: boolean;
  /** The builds a browser can run. */
  variants: { id: string; version: string; quantization: string; download_bytes: number; cpu: boolean; state: EngineState }[];
}

export declare class Seam {
  /** Connects to a Seam server. Rejects with a SeamError that says why (unreachable, origin not allowed, API version, an option);
   * a server that is down is accepted when this browser remembers it and holds a checked model: status().server says so. */
  static connect(options?: ConnectOptions): Promise<Seam>;

  readonly chat: {
    completions: {
      create(request: ChatCompletionRequest & { stream: true }, options?: RequestOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
      create(request: ChatCompletionRequest & { stream?: false }, options?: RequestOptions): Promise<ChatCompletion>;
    };
  };
  readonly models: { list(): Promise<{ object: "list"; data: ModelInfo[] }> };
  /** Present only when the server runs with SEAM_TEST_HOOKS. */
  readonly test?: { loseDeviceAfter(tokens: number): void };

  status(): Status;
  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends keyof SeamEvents>(type: K, listener: (event: SeamEvents[K]) => void): () => void;
  /** Changes the model or the preference; the router is asked again. */
  configure(options: { model?: string; preference?: Preference }): Promise<void>;
  /** Downloads, loads and checks a browser model now (the router's pick, or `variant`). */
  prepare(options?: { variant?: string; kernels?: Kernels }): Promise<EngineEntry>;
  /** Ends the browser engine's worker. */
  close(): void;
}

export type ErrorKindName =
  | "WebGPUNotAvailableError" | "WasmSimdNotAvailableError" | "CpuBuildMissingError" | "OutOfMemoryError"
  | "FeatureMissingError" | "AdapterLimitsError" | "StorageQuotaError" | "DownloadError" | "IntegrityError"
  | "ShaderCompilationError" | "DeviceLostError" | "GPUExecutionError" | "CPUExecutionError" | "ContextWindowError"
  | "EngineNotLoadedError" | "EngineRestartedError" | "SelfCheckError" | "NoEngineError" | "InvalidSchemaError"
  | "InvalidRequestError" | "ChatTemplateRefusedError" | "InvalidOptionError" | "ServerUnreachableError" | "OriginNotAllowedError" | "ApiVersionError";

export declare const ErrorKind: {
  readonly NoWebGPU: "WebGPUNotAvailableError";
  readonly NoWasmSimd: "WasmSimdNotAvailableError";
  readonly NoCpuBuild: "CpuBuildMissingError";
  readonly OutOfMemory: "OutOfMemoryError";
  readonly MissingFeature: "FeatureMissingError";
  readonly LimitsTooSmall: "AdapterLimitsError";
  readonly StorageQuota: "StorageQuotaError";
  readonly Download: "DownloadError";
  readonly Integrity: "IntegrityError";
  readonly Shader: "ShaderCompilationError";
  readonly DeviceLost: "DeviceLostError";
  readonly GPUExecution: "GPUExecutionError";
  readonly CPUExecution: "CPUExecutionError";
  readonly ContextWindow: "ContextWindowError";
  readonly NotLoaded: "EngineNotLoadedError";
  readonly Restarted: "EngineRestartedError";
  readonly SelfCheck: "SelfCheckError";
  readonly NoEngine: "NoEngineError";
  readonly InvalidSchema: "InvalidSchemaError";
  readonly InvalidRequest: "InvalidRequestError";
  readonly TemplateRefused: "ChatTemplateRefusedError";
  readonly InvalidOption: "InvalidOptionError";
  readonly ServerUnreachable: "ServerUnreachableError";
  readonly OriginNotAllowed: "OriginNotAllowedError";
  readonly ApiVersion: "ApiVersionError";
};

/** Every error the client throws: `kind` says which. (A failure of the server's API is a CloudError, with its HTTP `status`.) */
export declare class SeamError extends Error {
  constructor(kind: ErrorKindName, message: string);
  readonly kind: ErrorKindName;
}

// The browser engine: a model compiled by `make build-model`, run with tvmjs on WebGPU, or on the CPU
// (the variant's wasm SIMD build: kernels "cpu"). It lives in a Web Worker (worker.js). Loading follows a
// flat sequence of steps; generation is one prefill, then one decode per token, sampling on the CPU.
import { ChatTemplate } from "./chat_template.js";
import { EngineError, ErrorKind } from "./errors.js";
import { Grammars, parseResponseFormat } from "./grammar.js";
import { adapterLabel, chooseKernels, requestGPU } from "./gpu.js";
import { ensureModelFiles, CACHE_NAME } from "./model_cache.js";
import { reusable } from "./next_turn.js";
import { StreamedText, parseSampling, sample } from "./sampling.js";
import { CallReader, checkToolMessages, forTemplate, parseTools, structuralTag } from "./tools.js";
import { instantiateThreaded, threadsHere } from "./cpu_threads.js";
import { checkCpu, cpuError, cpuLabel } from "./wasm_cpu.js";

export class LocalEngine {
  // `vendor`: URLs of tvmjs, web-tokenizers, jinja and xgrammar, from the server; `grammar`: the server's
  // JSON style and unsupported schema keywords; `request`: the server's default and largest max_tokens;
  // `featureLevel`: which WebGPU adapter to ask for first, "core" or "compatibility"; `partBytes`: the size
  // of the stored parts of a download; `kernels`: the kernel set to run ("software" or "gpu"; by default
  // the one that suits the adapter; "cpu" runs the CPU build, no WebGPU needed); `cpuThreads`: how many
  // threads the CPU build may use (every core by default, where the page is cross-origin isolated).
  constructor({ vendor, grammar, tools, request, featureLevel = "core", partBytes, kernels, cpuThreads, cpuMaxThreads }) {
    this.vendor = vendor;
    this.grammarRules = grammar;
    this.toolRules = tools;
    this.requestLimits = request;
    this.featureLevel = featureLevel;
    this.partBytes = partBytes;
    this.requestedKernels = kernels;
    this.requestedThreads = cpuThreads;
    this.maxThreads = cpuMaxThreads;
    this.lost = null;
  }

  async load(model, origin, onProgress) {
    if (this.requestedKernels === "cpu") checkCpu(model);  // before anything is fetched
    // Step 1. The libraries (UMD bundles set globals; jinja is a module).
    await import(this.vendor.tvmjs);
    await import(this.vendor.tokenizers);
    const { Template } = await import(this.vendor.jinja);
    // Step 2. A WebGPU device that has what this variant needs, or a CPU that can run its CPU build.
    const gpu = this.requestedKernels === "cpu" ? this.useCpu(model) : await this.openGPU(model);
    // Step 3. The files, verified and cached.
    const { urls, cache } = await ensureModelFiles(model, origin, onProgress, { partBytes: this.partBytes,
                                                                               kernels: this.kernels,
                                                                               cpuThreads: this.threads > 1 });
    const read = async (url) => (await cache.match(url)).arrayBuffer();
    this.config = JSON.parse(new TextDecoder().decode(await read(urls.config)));
    this.tokenizer = await tokenizers.Tokenizer.fromJSON(await read(urls.tokenizer));
    this.template = new ChatTemplate(Template, this.config.chat_template, this.config.special_tokens,
                                     this.config.control_tokens);
    // Step 4. The wasm, the weights on the device, and the compiled functions, created once per load.
    onProgress({ phase: gpu ? "gpu" : "cpu" });
    try {
      await this.instantiate(await read(urls.wasm(this.kernels, this.threads > 1)), urls, gpu, model);
    } catch (error) {  // on the CPU, the weights fill the wasm heap: it may not grow enough
      this.stopThreads?.();
      throw this.kernels === "cpu" && !(error instanceof EngineError) ? cpuError(error) : error;
    }
    await this.sync();
    await this.warmUp();
    this.model = model;
    return { adapter: this.adapter, kernels: this.kernels, kernelsWhy: this.kernelsWhy, threads: this.threads,
             threadsWhy: this.threadsWhy };
  }

  async instantiate(wasm, urls, gpu, model) {
    let tvm;
    if (this.threads > 1) {  // where its helpers cannot start, its loops run on this thread alone
      const threaded = await instantiateThreaded(wasm, model, this.threads);
      ({ tvm, stop: this.stopThreads } = threaded);
      if (threaded.why) this.setThreads(1, threaded.why);
    } else tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), () => {});
    if (gpu) tvm.initWebGPU(gpu.device);
    this.tvm = tvm;
    this.device = gpu ? tvm.webgpu() : tvm.cpu();
    tvm.beginScope();
    await tvm.fetchTensorCache(urls.base, this.device, CACHE_NAME, "cache");
    this.params = tvm.detachFromCurrentScope(tvm.getParamsFromCacheByName(this.config.param_names));
    const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(this.device));
    this.fn = {};
    for (const name of ["embed", "prefill", "decode", "create_tir_paged_kv_cache"])
      this.fn[name] = tvm.detachFromCurrentScope(vm.getFunction(name));
    this.logitsOnHost = tvm.detachFromCurrentScope(tvm.empty([this.config.vocab_size], "float32", tvm.cpu()));
    tvm.endScope();
  }

  // The CPU build (load() checked that this browser can run it): no GPU, and as many threads as it may use.
  useCpu(model) {
    Object.assign(this, { kernels: "cpu", kernelsWhy: null });
    const { threads, why } = threadsHere(model, this.requestedThreads, this.maxThreads);
    this.setThreads(threads, why);
    return null;
  }

  setThreads(threads, why) {
    Object.assign(this, { threads, threadsWhy: why, adapter: cpuLabel(threads) });
  }

  async openGPU(model) {
    const gpu = await requestGPU(this.featureLevel).catch(() => null);
    if (!gpu) throw new EngineError(ErrorKind.NoWebGPU, "this browser has no usable WebGPU; the answer can come from the cloud");
    const features = new Set(gpu.device.features);
    const missing = model.requirements.features.filter((f) => !features.has(f));
    if (missing.length) throw new EngineError(ErrorKind.MissingFeature,
      `${model.id} needs WebGPU feature ${missing.join(", ")}, which this GPU lacks; pick a q4f32 variant`);
    const limits = gpu.device.limits;
    if (limits.maxStorageBufferBindingSize < model.requirements.max_storage_buffer_binding_size)
      throw new EngineError(ErrorKind.LimitsTooSmall, `${model.id} needs storage buffers of ` +
        `${model.requirements.max_storage_buffer_binding_size} bytes, this GPU allows ${limits.maxStorageBufferBindingSize}`);
    this.adapter = adapterLabel(gpu.adapterInfo, gpu.compatibility);
    ({ kernels: this.kernels, why: this.kernelsWhy } = chooseKernels(model, gpu, this.requestedKernels));
    this.gpuDevice = gpu.device;
    this.lostPromise = gpu.device.lost.then((info) => { this.lost = info; });
    gpu.device.addEventListener("uncapturederror", (event) => { this.gpuError = event.error.message; });
    return gpu;
  }

  checkDevice() {
    if (this.lost) throw new EngineError(ErrorKind.DeviceLost, `the GPU was lost (${this.lost.message || this.lost.reason}); ` +
                                         "the answer can continue in the cloud");
    if (this.gpuError) throw new EngineError(ErrorKind.Shader, `the GPU rejected a kernel: ${this.gpuError}`);
  }

  // Waits for the GPU, but not forever: a lost device may never finish its work. (The CPU's work is done
  // when its call returns.)
  async sync() {
    if (this.kernels === "cpu") return;
    try {
      await Promise.race([this.device.sync(), this.lostPromise]);
    } catch (error) {
      await Promise.race([this.lostPromise, new Promise((resolve) => setTimeout(resolve, 100))]);
      this.checkDevice();
      throw new EngineError(ErrorKind.GPUExecution, `the GPU failed while computing (${error.message})`);
    }
    this.checkDevice();
  }

  // Frees the model: its weights, compiled functions and GPU device (or wasm memory). tvmjs's dispose first,
  // so that the device's end is not reported as a loss.
  dispose() {
    this.stopThreads?.();
    try {
      this.kept?.cache.dispose();
      this.tvm?.dispose();
    } catch (error) { /* already gone with a lost device */ }
    this.gpuDevice?.destroy();
    this.tvm = null;
  }

  // Test-only fault injection (the server enables it with SEAM_TEST_HOOKS): destroys the GPU device after
  // `tokens` more tokens, as a driver reset or a sleeping laptop would.
  loseDeviceAfter(tokens) { this.loseAfter = tokens; }

  // With `continueFinal`, the prompt goes on with the last (assistant) message: an answer begun elsewhere.
  // `continueIds` are that answer's own tokens (as router/engine.py's prompt_ids takes them): its text may
  // tokenize otherwise, and the answer goes on exactly only from the tokens it drew.
  // `tools`: for a template that takes them (tools.js forTemplate).
  promptIds(messages, continueFinal = false, continueIds = null, tools = null) {
    const head = continueFinal ? messages.slice(0, -1) : messages;
    const tail = continueFinal ? messages[messages.length - 1].content : "";
    const text = this.template.render(head, tools);
    if (continueIds && this.spells(continueIds, tail)) return [...this.tokenizer.encode(text, false), ...continueIds];
    return Array.from(this.tokenizer.encode(text + this.template.asText(tail), false));
  }

  spells(ids, text) {
    return ids.every((id) => id < this.config.vocab_size) && this.tokenizer.decode(Int32Array.from(ids)) === text;
  }

  // The token mask for a structured answer (`want`: {format} for a response_format, {tag} for a tool
  // structural tag); web-xgrammar is loaded the first time one is asked for, and again (a fresh instance)
  // after a schema it could not compile aborted the one it had. `notify("compiling")` and
  // `notify("compiled")` bracket the compile, which the worker client times (worker_client.js).
  async constraint(want, messages, continueFinal, notify) {
    if (!this.grammars || this.grammars.aborted) {
      this.grammarInstances = (this.grammarInstances ?? -1) + 1;
      this.grammars = await Grammars.create(this.vendor.xgrammar, this.tokenizer, this.config, this.grammarRules,
                                            this.grammarInstances);
    }
    notify("compiling");
    const constraint = await (want.tag ? this.grammars.toolConstraint(want.tag) : this.grammars.constraint(want.format))
      .finally(() => notify("compiled"));
    if (continueFinal && !constraint.acceptText(messages[messages.length - 1].content)) {
      constraint.dispose();
      throw new EngineError(ErrorKind.InvalidSchema, want.tag ? "the answer to continue is no text or call the tools allow"
                                                              : "the answer to continue does not follow the response_format's schema");
    }
    return constraint;
  }

  // A KV cache for one sequence, taking prefills of up to `prefillTokens`; the caller disposes of it.
  newCache(prefillTokens = this.config.prefill_chunk_size) {
    const tvm = this.tvm;
    const S = (a) => tvm.makeShapeTuple(a);
    tvm.beginScope();
    try {  // (on the CPU the cache's pages come from the wasm heap, which may not grow enough)
      const cache = tvm.detachFromCurrentScope(this.fn.create_tir_paged_kv_cache(
        S([1]), S([this.config.context_window_size]), S([prefillTokens]),
        S([this.config.kv_cache_page_size]), S([0])));
      tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence")(cache, new tvmjs.Scalar(0, "int64"));
      return cache;
    } catch (error) {
      throw this.kernels === "cpu" ? cpuError(error) : error;
    } finally {
      tvm.endScope();
    }
  }

  // The KV cache for an answer to `prompt`, and the tokens it holds: the cache of the answer given last when
  // the prompt is the next turn of that conversation (it begins with that answer's whole prompt), cut back
  // to the tokens the prompt repeats (all of them when the answer was re-tokenized the same way), always
  // leaving at least one token to prefill, whose logits start the answer; any other prompt gets a fresh
  // cache, so a new conversation's answer never depends on what was asked before. The caller keeps it
  // again (this.kept) once the answer is whole. The server's ConversationCaches follows the same rule.
  cacheFor(prompt) {
    const kept = this.kept;
    this.kept = null;
    const shared = kept ? reusable(kept.held, kept.promptLength, prompt) : null;
    if (shared === null) {
      kept?.cache.dispose();
      return { cache: this.newCache(), held: [] };
    }
    if (shared < kept.held.length) {
      this.tvm.beginScope();
      try {
        this.tvm.getGlobalFunc("vm.builtin.kv_state_popn")(kept.cache, new tvmjs.Scalar(0, "int64"),
                                                           new tvmjs.Scalar(kept.held.length - shared, "int64"));
      } finally {
        this.tvm.endScope();
      }
    }
    kept.held.length = shared;
    return kept;
  }

  // One forward pass ("prefill" or "decode") over `ids`: the logits of the last position, on the host.
  async forward(cache, name, ids) {
    const tvm = this.tvm;
    const kvState = (step) => tvm.getGlobalFunc(`vm.builtin.kv_state_${step}`);
    tvm.beginScope();
    kvState("begin_forward")(cache, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
    const input = tvm.empty([ids.length], "int32", this.device).copyFrom(Int32Array.from(ids));
    try {
      const out = this.fn[name](this.fn.embed(input, this.params), cache, this.params);
      kvState("end_forward")(cache);
      this.logitsOnHost.copyFrom(out.get(0));
    } catch (error) {
      if (this.kernels === "cpu") throw cpuError(error);
      throw error;
    } finally {
      tvm.endScope();
    }
    await this.sync();
    return this.logitsOnHost.toArray();
  }

  // One prefill and one decode step at load: a pipeline's first dispatch can compile its shader (a second
  // or more on a software adapter), which belongs to the load, not to the first answer's time and speed.
  async warmUp() {
    const cache = this.newCache();
    try {
      await this.forward(cache, "prefill", [0, 0]);
      await this.forward(cache, "decode", [0]);
    } finally {
      cache.dispose();
    }
  }

  // The reader of the answer's calls; going on with an answer begun elsewhere, it first reads what was given
  // (the other path sent its events), so that a call opened there goes on here with its index (router/api.py).
  callReader(tools, messages, continueFinal) {
    const reader = new CallReader(this.toolFormat, tools.functions.map((f) => f.name), this.toolRules);
    if (continueFinal) reader.push(messages[messages.length - 1].content);
    return reader;
  }

  // How this model writes its calls: the catalog's word (router/tools.py tool_format).
  get toolFormat() { return this.model.tool_format ?? "generic"; }

  // Yields {text} pieces, then {finish_reason, usage, stats, token_ids, stop_token_id}. The prompt is the
  // chat template over `messages`, or `options.prompt_token_ids` as given (the catalog's self-check).
  // `options.response_format` (OpenAI's shapes) masks every token its JSON schema does not allow; with
  // `options.tools`, every call follows its function's parameters, and each piece says what it `read`:
  // content and call events (tools.js CallReader).
  async *generate(messages, options, shouldStop, notify = () => {}) {
    if (!this.tvm) throw new EngineError(ErrorKind.NotLoaded, "no model is loaded in the browser engine");
    const started = performance.now();
    checkToolMessages(messages);
    const sampling = parseSampling(options, this.requestLimits);
    const format = parseResponseFormat(options.response_format, this.grammarRules);
    const tools = parseTools(options, this.toolRules, this.grammarRules);
    if (tools && format) throw new EngineError(ErrorKind.InvalidRequest, "tools and response_format cannot be asked " +
                                               "together yet: a tool's parameters already constrain its call; drop one of them");
    const [templateMessages, templateTools] = forTemplate(messages, tools, this.toolFormat, this.toolRules);
    const continueFinal = options.continue_final_message;
    const prompt = options.prompt_token_ids ??
      this.promptIds(templateMessages, continueFinal, continueIds(options, this.requestLimits), templateTools);
    const maxTokens = sampling.max_tokens, stops = sampling.stop;
    if (prompt.length + maxTokens > this.config.context_window_size)
      throw new EngineError(ErrorKind.ContextWindow, `the prompt is ${prompt.length} tokens and max_tokens is ${maxTokens}, ` +
                            `over the context window of ${this.config.context_window_size}; shorten the conversation`);
    const want = tools ? { tag: structuralTag(tools, this.toolFormat, this.toolRules) } : format && { format };
    const constraint = want && await this.constraint(want, messages, continueFinal, notify);
    const reader = tools && this.callReader(tools, messages, continueFinal);
    const stopIds = new Set(this.config.stop_token_ids);
    const { cache, held } = this.cacheFor(prompt);
    const step = async (name, ids) => { const logits = await this.forward(cache, name, ids); held.push(...ids); return logits; };
    const streamed = new StreamedText((ids) => this.tokenizer.decode(Int32Array.from(ids)), stops);
    const generated = streamed.tokens;
    let finish = "length", firstTokenAt = null, prefillDone = null, stopToken = null;
    const cached = held.length;
    let kept = false;
    try {
      let logits;
      for (let start = held.length, chunk = this.config.prefill_chunk_size; start < prompt.length; start += chunk)
        logits = await step("prefill", prompt.slice(start, start + chunk));
      prefillDone = performance.now();
      while (generated.length < maxTokens) {
        if (shouldStop()) { finish = "abort"; break; }
        const token = sample(constraint ? await constraint.mask(logits) : logits, sampling,
                             sampling.seed_position + generated.length);
        constraint?.accept(token);
        firstTokenAt = firstTokenAt ?? performance.now();
        if (stopIds.has(token)) { finish = "stop"; stopToken = token; break; }
        const piece = streamed.push(token);
        if (piece) {
          yield { text: piece.text, tokens: generated.length, ids: piece.ids, ...(reader && { read: reader.push(piece.text) }) };
          if (this.loseAfter !== undefined && --this.loseAfter <= 0) { this.loseAfter = undefined; this.gpuDevice.destroy(); }
        }
        if (streamed.stopped) { finish = "stop"; break; }
        if (generated.length < maxTokens) logits = await step("decode", [token]);
      }
      const tail = streamed.tail();  // a held-back tail that never became a stop string, or tokens that showed no text
      const read = reader && [...(tail ? reader.push(tail.text) : []), ...reader.end()];
      if (tail || read?.length) yield { text: tail?.text ?? "", tokens: generated.length, ids: tail?.ids ?? [], ...(read && { read }) };
      if (reader?.calls && finish === "stop") finish = "tool_calls";  // OpenAI's: an answer that called tools
      this.kept = { cache, held, promptLength: prompt.length };  // for the next turn of this conversation
      kept = true;
    } finally {
      if (!kept) cache.dispose();  // an answer that failed (or whose reader left) leaves no cache behind
      constraint?.dispose();
    }
    const now = performance.now();
    const decodeSeconds = ((now - (prefillDone ?? now)) / 1000) || 1e-9;
    yield {
      finish_reason: finish,
      token_ids: generated,
      stop_token_id: stopToken,
      usage: { prompt_tokens: prompt.length, completion_tokens: generated.length, total_tokens: prompt.length + generated.length },
      stats: {
        where: "browser", adapter: this.adapter, kernels: this.kernels, cached_tokens: cached,
        ttft_s: ((firstTokenAt ?? now) - started) / 1000,
        prefill_tokens_per_s: (prompt.length - cached) / (((prefillDone ?? now) - started) / 1000 || 1e-9),
        decode_tokens_per_s: generated.length / decodeSeconds,
        ...(constraint ? { grammar_ms_per_token: constraint.ms / Math.max(1, generated.length) } : {}),
        ...(this.kernels === "cpu" ? { threads: this.threads, threads_why: this.threadsWhy } : {}),
      },
    };
  }
}

// The request's continue_token_ids, checked as the server checks them.
function continueIds({ continue_token_ids: ids, continue_final_message: continueFinal }, { max_tokens_limit }) {
  if (ids === undefined || ids === null) return null;
  if (!continueFinal || !Array.isArray(ids) || ids.length > max_tokens_limit || !ids.every((i) => Number.isInteger(i) && i >= 0))
    throw new EngineError(ErrorKind.InvalidRequest, `continue_token_ids must be a list of at most ${max_tokens_limit} ` +
                          "token ids, sent with continue_final_message");
  return ids;
}


// Collects what the router needs to know about this device and the next answer: the probe report, schema version 1
// (router/schemas/probe-report.v1.json). Every probe is optional: a browser that lacks an API simply
// reports less, and the router decides with what it has.
import { cachedVersions } from "./engine/model_cache.js";
import { hasWasmSimd } from "./engine/wasm_cpu.js";

const BENCH_BYTES = 16 * 1024 * 1024;

async function probeWebGPU() {
  if (!navigator.gpu) return { gpu: { available: false }, device: null };
  let adapter = null;
  try { adapter = await navigator.gpu.requestAdapter(); } catch (e) { /* reported as unavailable */ }
  if (!adapter) return { gpu: { available: false }, device: null };
  let device = null;
  try { device = await adapter.requestDevice(); } catch (e) { return { gpu: { available: false }, device: null }; }
  const info = adapter.info || {};
  const limits = {};
  for (const name of ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
                      "maxComputeInvocationsPerWorkgroup"]) limits[name] = adapter.limits[name];
  return {
    gpu: {
      available: true,
      // Cut to the report schema's 200 characters: a long driver string must not cost the device its routing.
      adapter: { vendor: (info.vendor || "").slice(0, 200), architecture: (info.architecture || "").slice(0, 200),
                 description: (info.description || "").slice(0, 200),
                 is_fallback_adapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter) },
      features: [...adapter.features].sort(),
      limits,
    },
    device,
  };
}

// Memory bandwidth, the quantity that bounds decode speed: each invocation sums a strided slice of a
// 16 MB buffer. A few dispatches take well under a second even on software adapters. `make bench` uses
// a buffer larger than the model (so no cache holds it) for its roofline.
export async function measureBandwidth(device, bytes = BENCH_BYTES, times = 4) {
  const code = `
    @group(0) @binding(0) var<storage, read> data: array<vec4<f32>>;
    @group(0) @binding(1) var<storage, read_write> out: array<f32>;
    @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
      let n = arrayLength(&data); let stride = 64u * 256u;
      var acc = vec4<f32>(0.0);
      for (var i = id.x; i < n; i += stride) { acc += data[i]; }
      out[id.x] = acc.x + acc.y + acc.z + acc.w;
    }`;
  // 64 invocations per workgroup fit every adapter's default limits (compatibility mode allows 128):
  // a pipeline over the limit would be invalid, run nothing, and report an absurd bandwidth.
  device.pushErrorScope("validation");
  const data = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
  const out = device.createBuffer({ size: 256 * 64 * 4, usage: GPUBufferUsage.STORAGE });
  const pipeline = device.createComputePipeline({ layout: "auto",
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: data } }, { binding: 1, resource: { buffer: out } }] });
  const run = async (times) => {
    const encoder = device.createCommandEncoder();
    for (let i = 0; i < times; i++) {
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline); pass.setBindGroup(0, group); pass.dispatchWorkgroups(256); pass.end();
    }
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(1);  // compile and warm up
  const invalid = await device.popErrorScope();
  if (invalid) throw new Error(`the bandwidth kernel did not run: ${invalid.message}`);
  const started = performance.now();
  await run(times);
  const seconds = (performance.now() - started) / 1000;
  data.destroy(); out.destroy();
  return { bandwidth_gbps: Number(((times * bytes) / seconds / 1e9).toFixed(3)) };
}

async function probeStorage() {
  if (!navigator.storage || !navigator.storage.estimate) return null;
  const { quota = 0, usage = 0 } = await navigator.storage.estimate();
  const persisted = navigator.storage.persisted ? await navigator.storage.persisted() : false;
  return { quota_bytes: quota, usage_bytes: usage, persisted };
}

function probeNetwork() {
  const c = navigator.connection;
  if (!c) return null;
  const network = {};
  if (typeof c.saveData === "boolean") network.save_data = c.saveData;
  if (["slow-2g", "2g", "3g", "4g"].includes(c.effectiveType)) network.effective_type = c.effectiveType;
  if (typeof c.rtt === "number") network.rtt_ms = c.rtt;
  if (typeof c.downlink === "number" && c.downlink > 0) network.downlink_mbps = c.downlink;  // 0: unknown (offline)
  return network;
}

async function probeBattery() {
  if (!navigator.getBattery) return null;
  try {
    const b = await navigator.getBattery();
    // No browser exposes the OS battery saver; a discharging battery under 20% is treated as one.
    return { charging: b.charging, level: b.level, saver: !b.charging && b.level < 0.2 };
  } catch (e) { return null; }
}

// The adapter and its bandwidth are measured once per page (a later run would compete with the engine's
// own work on the same GPU and report the GPU busy, not slow); storage and the cache are read each time.
let devicePart = null;

async function probeDevice() {
  const { gpu, device } = await probeWebGPU();
  const benchmark = device ? await measureBandwidth(device).catch(() => null) : null;
  if (device) device.destroy();
  return { gpu, benchmark };
}

// The key this browser's measured speeds are kept under: its adapter as the probe sees it; its CPU's
// (the CPU build) under CPU_KEY.
export const CPU_KEY = "cpu";

export function adapterKey(report) {
  const a = report?.webgpu?.adapter;
  return a ? [a.vendor, a.architecture, a.description, a.is_fallback_adapter ? "fallback" : "hw"].join("|") : "none";
}

// `unreliable`: [{id, version, reason}] the page saw fail here; `clientId`: its random id, for the fleet
// counts. For the answer about to be asked: `promptTokens` (and whether that is an estimate), `maxTokens`,
// `structured` (a response_format, or tools the answer may call); `measured(key)`: this browser's own speeds for an adapter key;
// `measuredCloud`: the cloud's speed as this page saw it ({ttft_s, decode_tokens_per_s, answers}), if it has;
// `kernels`: the kernel set the page URL forces, if it does.
export async function collectProbeReport({ models, preference = "auto", promptTokens = 0, promptTokensEstimated,
                                           maxTokens, structured, model, unreliable = [], clientId,
                                           measured = () => [], measuredCloud, kernels }) {
  devicePart ??= probeDevice();
  const { gpu, benchmark } = await devicePart;
  const report = {
    schema_version: 1,
    webgpu: gpu,
    device_memory_gb: typeof navigator.deviceMemory === "number" ? navigator.deviceMemory : null,
    storage: await probeStorage(),
    cached_models: await cachedVersions(models, location.origin),
    unreliable_models: unreliable,
    benchmark,
    network: probeNetwork(),
    battery: await probeBattery(),
    wasm: { simd: hasWasmSimd(), threads: Boolean(self.crossOriginIsolated && typeof SharedArrayBuffer === "function") },
    hardware_concurrency: navigator.hardwareConcurrency || null,
    preference,
    prompt_tokens: promptTokens,
  };
  report.measured = [...measured(adapterKey(report)), ...measured(CPU_KEY)];
  if (promptTokensEstimated) report.prompt_tokens_estimated = true;
  if (maxTokens) report.max_tokens = maxTokens;
  if (structured) report.structured = true;
  if (model) report.model = model;
  if (clientId) report.client_id = clientId;
  if (kernels) report.kernels = kernels;
  if (measuredCloud) report.measured_cloud = measuredCloud;
  return report;
}

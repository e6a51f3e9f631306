// The WebGPU device the browser engine runs on, the name the page shows for its adapter, and which of
// the model's two kernel sets (models/README.md) runs on it.
import { EngineError, ErrorKind } from "./errors.js";

// The limits our kernels may need above WebGPU's defaults: as much as the adapter gives. (A
// compatibility-mode adapter's defaults are lower still, e.g. 128 invocations per workgroup.)
const RAISED_LIMITS = ["maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize",
  "maxStorageBuffersPerShaderStage", "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX"];

// A core adapter, unless `featureLevel` is "compatibility"; a compatibility-mode one (OpenGL ES or
// D3D11 underneath) where no core adapter exists. On CPU-only machines Chromium's compatibility
// adapter (Mesa's llvmpipe) runs our model 3.5-7x faster than its core one (SwiftShader).
export async function requestGPU(featureLevel) {
  const levels = featureLevel === "compatibility" ? ["compatibility", "core"] : ["core", "compatibility"];
  for (const level of levels) {
    const adapter = await navigator.gpu?.requestAdapter({ featureLevel: level }).catch(() => null);
    if (!adapter) continue;
    // Asked for compatibility, a browser may still give a core adapter (it has this feature then).
    const compatibility = level === "compatibility" && !adapter.features.has("core-features-and-limits");
    const requiredLimits = Object.fromEntries(RAISED_LIMITS.map((name) => [name, adapter.limits[name]]));
    const requiredFeatures = ["shader-f16", "subgroups"].filter((f) => adapter.features.has(f));
    return { adapterInfo: adapter.info, compatibility, fallback: Boolean(adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter),
             device: await adapter.requestDevice({ requiredLimits, requiredFeatures }) };
  }
  return null;
}

// "swiftshader", "NVIDIA GeForce RTX 4090", ..., marked when it is a compatibility-mode adapter.
export function adapterLabel(info, compatibility) {
  return (info.description || info.architecture || info.vendor || "WebGPU") + (compatibility ? " (compatibility mode)" : "");
}

// Adapters that run on the CPU, where an invocation is a SIMD lane: Chromium's SwiftShader, Mesa's
// llvmpipe/lavapipe/softpipe, Windows' WARP.
const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|\bwarp\b/i;

export function isSoftwareAdapter(gpu) {
  const info = gpu.adapterInfo || {};
  return gpu.fallback || SOFTWARE.test([info.vendor, info.architecture, info.device, info.description].join(" "));
}

// The kernel set to run: `requested` ("software" or "gpu", from the page URL or the JS API), else the one
// that suits the adapter. A set whose workgroups do not fit the device's limits is not used: the GPU
// set falls back to the software one. Returns {kernels, why}: `why` says why it fell back, else null.
export function chooseKernels(model, gpu, requested) {
  const wanted = requested || (isSoftwareAdapter(gpu) ? "software" : "gpu");
  const misfit = (set) => {
    const need = model.kernels[set], limits = gpu.device.limits;
    if (need.max_invocations_per_workgroup > limits.maxComputeInvocationsPerWorkgroup)
      return `the ${set} kernels need ${need.max_invocations_per_workgroup} invocations per workgroup, this GPU allows ` +
             `${limits.maxComputeInvocationsPerWorkgroup}`;
    if (need.max_workgroup_storage_bytes > limits.maxComputeWorkgroupStorageSize)
      return `the ${set} kernels need ${need.max_workgroup_storage_bytes} bytes of workgroup memory, this GPU allows ` +
             `${limits.maxComputeWorkgroupStorageSize}`;
    return null;
  };
  if (!misfit(wanted)) return { kernels: wanted, why: null };
  if (wanted === "gpu" && !misfit("software")) return { kernels: "software", why: misfit("gpu") };
  throw new EngineError(ErrorKind.LimitsTooSmall, `${model.id} cannot run here: ${misfit(wanted)}`);
}

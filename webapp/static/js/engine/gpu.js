// The WebGPU device the browser engine runs on, and the name the page shows (and remembers self-checks
// under) for its adapter.

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
    return { adapterInfo: adapter.info, compatibility, device: await adapter.requestDevice({ requiredLimits, requiredFeatures }) };
  }
  return null;
}

// "swiftshader", "NVIDIA GeForce RTX 4090", ..., marked when it is a compatibility-mode adapter.
export function adapterLabel(info, compatibility) {
  return (info.description || info.architecture || info.vendor || "WebGPU") + (compatibility ? " (compatibility mode)" : "");
}

// Downloads a model's files into the Cache API, verifying every weight shard against its sha256, with
// progress. Files live under their versioned URLs, so a cached URL is always the right bytes, and a
// reload finds everything here and downloads nothing.
import { EngineError, ErrorKind } from "./errors.js";

export const CACHE_NAME = "seam-models";

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");

export function modelUrls(model, origin) {
  const base = new URL(model.base_url, origin).href;
  const url = (name) => new URL(name, base).href;
  return { base, config: url(model.files.config), tokenizer: url(model.files.tokenizer),
           wasm: url(model.files.wasm), tensorCache: url(model.files.tensor_cache), url };
}

async function download(url, expectedBytes, onBytes, signal) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (error) {
    throw new EngineError(ErrorKind.Download, `downloading ${url} failed (${error.message}); check the connection and retry`);
  }
  if (!response.ok) throw new EngineError(ErrorKind.Download, `the server answered ${response.status} for ${url}`);
  const reader = response.body.getReader();
  const parts = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    received += value.byteLength;
    onBytes(value.byteLength);
  }
  if (expectedBytes !== undefined && received !== expectedBytes)
    throw new EngineError(ErrorKind.Integrity, `${url} arrived with ${received} bytes instead of ${expectedBytes}`);
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const part of parts) { bytes.set(part, offset); offset += part.byteLength; }
  return { bytes, type: response.headers.get("Content-Type") || "application/octet-stream" };
}

// Makes sure every file of `model` is in the cache; reports {loaded, total, file, etaSeconds} as it goes.
export async function ensureModelFiles(model, origin, onProgress, signal) {
  const urls = modelUrls(model, origin);
  const cache = await caches.open(CACHE_NAME);
  let index = await cache.match(urls.tensorCache);
  const indexBytes = index ? null : (await download(urls.tensorCache, undefined, () => {}, signal)).bytes;
  const records = JSON.parse(new TextDecoder().decode(indexBytes || await index.arrayBuffer())).records;
  const wanted = [
    { url: urls.config }, { url: urls.tokenizer }, { url: urls.wasm },
    ...records.map((shard) => ({ url: urls.url(shard.dataPath), bytes: shard.nbytes, sha256: shard.sha256 })),
  ];
  const missing = [];
  for (const file of wanted) if (!(await cache.match(file.url))) missing.push(file);
  const total = model.download_bytes;
  let loaded = total - missing.reduce((sum, f) => sum + (f.bytes || 0), 0);
  const started = performance.now();
  const report = (file) => {
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0.2 ? (loaded - (total - missingBytes)) / seconds : 0;
    onProgress({ phase: "download", loaded, total, file, etaSeconds: rate > 0 ? (total - loaded) / rate : null,
                 fromCache: missing.length === 0 });
  };
  const missingBytes = missing.reduce((sum, f) => sum + (f.bytes || 0), 0);
  if (missingBytes > 0 && navigator.storage && navigator.storage.estimate) {
    const { quota = Infinity, usage = 0 } = await navigator.storage.estimate();
    if (quota - usage < missingBytes)
      throw new EngineError(ErrorKind.StorageQuota, `the model needs ${(missingBytes / 1e6).toFixed(0)} MB of storage and ` +
                            `this browser allows ${((quota - usage) / 1e6).toFixed(0)} MB more; free some space`);
    if (navigator.storage.persist) await navigator.storage.persist().catch(() => false);
  }
  report(null);
  for (const file of missing) {
    const { bytes, type } = await download(file.url, file.bytes, (n) => { if (file.bytes) { loaded += n; report(file.url); } }, signal);
    if (file.sha256 && hex(await crypto.subtle.digest("SHA-256", bytes)) !== file.sha256)
      throw new EngineError(ErrorKind.Integrity, `${file.url} is corrupt (its sha256 does not match the catalog); ` +
                            "nothing was stored; reload to download it again, or use the cloud");
    await cache.put(file.url, new Response(bytes, { headers: { "Content-Type": type } }));
  }
  if (indexBytes) await cache.put(urls.tensorCache, new Response(indexBytes, { headers: { "Content-Type": "application/json" } }));
  report(null);
  return { urls, cache };
}

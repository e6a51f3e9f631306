// Downloads a model's files into the Cache API, verifying every weight shard against its sha256, with
// progress. Files live under their versioned URLs, so a cached URL is always the right bytes, and a
// reload finds everything here and downloads nothing.
//
// Downloads survive dropped connections and reloads: a shard arrives in parts of `partBytes` (the server's
// SEAM_DOWNLOAD_PART_BYTES, 4 MiB by default), each stored
// as soon as it is complete (under `<url>?seam-part=<offset>`), and a later attempt asks only for the rest
// with an HTTP Range request. A file is stored under its own URL only once whole and verified, and the
// version's tensor-cache.json last of all, so a version is either complete in the cache or not listed.
import { EngineError, ErrorKind } from "./errors.js";

export const CACHE_NAME = "seam-models";
const PART_BYTES = 4 * 1024 * 1024;  // when the server does not say
const ATTEMPTS = 4;  // per file: a dropped connection resumes, a corrupt file is fetched once more

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const partKey = (url, offset) => `${url}?seam-part=${offset}`;

export function modelUrls(model, origin) {
  const base = new URL(model.base_url, origin).href;
  const url = (name) => new URL(name, base).href;
  return { base, config: url(model.files.config), tokenizer: url(model.files.tokenizer),
           wasm: (kernels, cpuThreads = false) => url(model.files[wasmFile(model, kernels, cpuThreads)]),
           tensorCache: url(model.files.tensor_cache), url,
           allVersions: new URL("..", base).href };  // /models/<id>/: every version's folder is under it
}

// The catalog's name of the wasm that runs `kernels` (the CPU build's threaded one with `cpuThreads`).
function wasmFile(model, kernels, cpuThreads) {
  if (kernels !== "cpu") return model.kernels[kernels].file;
  return cpuThreads ? model.cpu.threads.file : model.cpu.file;
}

// The versions of each catalog model that are complete in this browser's cache: [{id, version}].
export async function cachedVersions(models, origin) {
  if (!self.caches || !(await caches.has(CACHE_NAME))) return [];
  const urls = (await (await caches.open(CACHE_NAME)).keys()).map((request) => request.url);
  const found = [];
  for (const model of models) {
    const { allVersions } = modelUrls(model, origin);
    for (const url of urls) {
      const rest = url.startsWith(allVersions) ? url.slice(allVersions.length).split("/") : [];
      if (rest.length === 2 && rest[1] === model.files.tensor_cache) found.push({ id: model.id, version: rest[0] });
    }
  }
  return found;
}

// Frees the storage of every other version of this model (after this one loaded and checked out), except
// the versions in `keep` (still loading or answering).
export async function deleteOtherVersions(model, origin, keep = []) {
  const { allVersions } = modelUrls(model, origin);
  const kept = [model.version, ...keep].map((version) => `${allVersions}${version}/`);
  return deleteMatching(await caches.open(CACHE_NAME),
                        (url) => url.startsWith(allVersions) && !kept.some((prefix) => url.startsWith(prefix)));
}

async function deleteMatching(cache, matches) {
  let deleted = 0;
  for (const request of await cache.keys()) if (matches(request.url)) deleted += await cache.delete(request);
  return deleted;
}

async function store(cache, url, bytes, type) {
  try {
    await cache.put(url, new Response(bytes, { headers: { "Content-Type": type } }));
  } catch (error) {
    if (error.name !== "QuotaExceededError") throw error;
    throw new EngineError(ErrorKind.StorageQuota, "this browser's storage for the site is full; free some space " +
                          "(or allow more), meanwhile answers come from the cloud");
  }
}

// The stored parts of a file, in order, as long as they are contiguous from byte 0.
async function storedParts(cache, url) {
  const parts = [];
  for (const request of await cache.keys()) {
    const match = request.url.startsWith(`${url}?seam-part=`) && Number(request.url.split("=").pop());
    if (match !== false) parts.push({ offset: match, request });
  }
  parts.sort((a, b) => a.offset - b.offset);
  const kept = [];
  let next = 0;
  for (const part of parts) {
    if (part.offset !== next) break;
    const bytes = new Uint8Array(await (await cache.match(part.request)).arrayBuffer());
    kept.push(bytes);
    next += bytes.byteLength;
  }
  return kept;
}

const dropParts = (cache, url) => deleteMatching(cache, (key) => key.startsWith(`${url}?seam-part=`));

// One try at the rest of a file: asks for the bytes after those already stored, storing each full part.
async function downloadRest(cache, file, parts, onBytes, { partBytes = PART_BYTES, signal } = {}) {
  let have = parts.reduce((sum, p) => sum + p.byteLength, 0);
  const headers = have > 0 ? { Range: `bytes=${have}-` } : {};
  let response;
  try {
    response = await fetch(file.url, { signal, headers, cache: "no-store" });
  } catch (error) {
    throw new EngineError(ErrorKind.Download, `downloading ${file.url} failed (${error.message}); check the connection and retry`);
  }
  if (!response.ok) throw new EngineError(ErrorKind.Download, `the server answered ${response.status} for ${file.url}`);
  if (have > 0 && response.status !== 206) {  // the server sent the whole file: start over
    onBytes(-have);
    parts.length = 0;
    have = 0;
    await dropParts(cache, file.url);
  }
  const type = response.headers.get("Content-Type") || "application/octet-stream";
  const reader = response.body.getReader();
  let pending = [], pendingBytes = 0;
  // Stores the first `bytes` of what arrived as one part. Parts are exactly `partBytes` (the last one of a
  // file shorter), however the network chunks the stream, so a resumed download starts on a part boundary.
  const flush = async (bytes) => {
    const arrived = concat(pending, pendingBytes);
    const part = arrived.slice(0, bytes);
    if (file.bytes !== undefined) await store(cache, partKey(file.url, have), part, type);
    parts.push(part);
    have += bytes;
    pending = bytes < pendingBytes ? [arrived.subarray(bytes)] : [];
    pendingBytes -= bytes;
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      pending.push(value);
      pendingBytes += value.byteLength;
      onBytes(value.byteLength);
      while (pendingBytes >= partBytes) await flush(partBytes);
    }
  } catch (error) {
    if (error instanceof EngineError) throw error;
    throw new EngineError(ErrorKind.Download, `the connection dropped while downloading ${file.url} (${error.message}); ` +
                          `${have} bytes are kept and the rest will be asked for`);
  }
  if (pendingBytes) await flush(pendingBytes);
  return type;
}

function concat(parts, total) {
  const bytes = new Uint8Array(total ?? parts.reduce((sum, p) => sum + p.byteLength, 0));
  let offset = 0;
  for (const part of parts) { bytes.set(part, offset); offset += part.byteLength; }
  return bytes;
}

// A file, whole and verified, into the cache. Dropped connections resume; a file whose size or sha256
// is wrong is thrown away and fetched once more before giving up.
async function fetchFile(cache, file, onBytes, options) {
  let corrupt = 0;
  for (let attempt = 1; ; attempt++) {
    let counted = 0;  // what this attempt added to the progress, taken back if it fails
    const count = (n) => { counted += n; onBytes(n); };
    const parts = await storedParts(cache, file.url);
    count(parts.reduce((sum, p) => sum + p.byteLength, 0));
    try {
      const type = await downloadRest(cache, file, parts, count, options);
      const bytes = concat(parts);
      const wrongSize = file.bytes !== undefined && bytes.byteLength !== file.bytes;
      const wrongHash = !wrongSize && file.sha256 && hex(await crypto.subtle.digest("SHA-256", bytes)) !== file.sha256;
      if (wrongSize || wrongHash) {
        await dropParts(cache, file.url);
        onBytes(-counted);
        const what = wrongSize ? `arrived with ${bytes.byteLength} bytes instead of ${file.bytes}`
                               : "is corrupt (its sha256 does not match the catalog)";
        if (++corrupt < 2) continue;
        throw new EngineError(ErrorKind.Integrity, `${file.url} ${what}, twice; nothing was stored; ` +
                              "reload to download it again, or use the cloud");
      }
      await store(cache, file.url, bytes, type);
      await dropParts(cache, file.url);
      return;
    } catch (error) {
      if (error.kind !== ErrorKind.Download || attempt >= ATTEMPTS || options.signal?.aborted) throw error;
      onBytes(-counted);  // counted again from the stored parts on the next attempt
      await sleep(500 * attempt);
    }
  }
}

// Makes sure every file of `model` is in the cache (of its wasm, the kernel set's, or the CPU one's for
// kernels "cpu", its threaded one with cpuThreads); reports {loaded, total, file, etaSeconds} as it goes.
// `options`: {partBytes, kernels ("software" by default), cpuThreads, signal}.
export async function ensureModelFiles(model, origin, onProgress, options = {}) {
  const urls = modelUrls(model, origin);
  const cache = await caches.open(CACHE_NAME);
  let indexBytes = null;
  const index = await cache.match(urls.tensorCache);
  if (index) indexBytes = new Uint8Array(await index.arrayBuffer());
  else {
    const parts = [];
    await downloadRest(cache, { url: urls.tensorCache }, parts, () => {}, options);
    indexBytes = concat(parts);
  }
  const records = JSON.parse(new TextDecoder().decode(indexBytes)).records;
  const wanted = [
    { url: urls.config }, { url: urls.tokenizer }, { url: urls.wasm(options.kernels || "software", options.cpuThreads) },
    ...records.map((shard) => ({ url: urls.url(shard.dataPath), bytes: shard.nbytes, sha256: shard.sha256 })),
  ];
  const missing = [];
  for (const file of wanted) if (!(await cache.match(file.url))) missing.push(file);
  const total = options.kernels === "cpu" ? model.cpu.download_bytes : model.download_bytes;
  const missingBytes = missing.reduce((sum, f) => sum + (f.bytes || 0), 0);
  let loaded = total - missingBytes;
  const started = performance.now();
  const startedAt = loaded;
  const report = (file) => {
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0.2 ? (loaded - startedAt) / seconds : 0;
    onProgress({ phase: "download", loaded, total, file, etaSeconds: rate > 0 ? (total - loaded) / rate : null,
                 fromCache: missing.length === 0 });
  };
  if (missingBytes > 0 && navigator.storage && navigator.storage.estimate) {
    const { quota = Infinity, usage = 0 } = await navigator.storage.estimate();
    if (quota - usage < missingBytes)
      throw new EngineError(ErrorKind.StorageQuota, `the model needs ${(missingBytes / 1e6).toFixed(0)} MB of storage and ` +
                            `this browser allows ${((quota - usage) / 1e6).toFixed(0)} MB more; free some space`);
    if (navigator.storage.persist) await navigator.storage.persist().catch(() => false);
  }
  report(null);
  try {
    for (const file of missing) {
      await fetchFile(cache, file, (n) => {
        if (!file.bytes) return;
        loaded += n;
        report(file.url);
      }, options);
    }
  } catch (error) {
    // Out of space: this version cannot be completed, so give back what it took.
    if (error.kind === ErrorKind.StorageQuota) await deleteMatching(cache, (url) => url.startsWith(urls.base));
    throw error;
  }
  if (!index) await store(cache, urls.tensorCache, indexBytes, "application/json");
  report(null);
  return { urls, cache };
}

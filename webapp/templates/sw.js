// Seam's service worker, rendered by the server (router/shell.py) with its build id and the app shell's URLs:
// the page, its static files, the client package and the vendor libraries. It lets a returning visitor open
// the page and answer in the browser while the server is unreachable (the model is in the engine's own cache).
//
// One cache per build. Install takes the whole shell or nothing; activation deletes every other build's
// cache. A shell request goes to the network first and falls back to this build's cache only when the
// network fails, so online the page is always the server's current one, and offline it is one build whole.
// Nothing else is touched: the API, the models and the reports go to the network as they would without it.
const BUILD = "{{ build }}";
const SHELL = {{ shell }};
const PREFIX = "seam-shell-";
const CACHE = PREFIX + BUILD;
const IN_SHELL = new Set(SHELL.map((url) => new URL(url, self.location.href).href));

self.addEventListener("install", (event) => event.waitUntil((async () => {
  const cache = await caches.open(CACHE);
  try {
    await cache.addAll(SHELL.map((url) => new Request(url, { cache: "no-cache" })));
    // The server may have moved to another build while the files came: then this shell is not one build.
    const page = await (await cache.match(SHELL[0])).text();
    if (!page.includes(`<meta name="seam-build" content="${BUILD}">`))
      throw new Error(`the page is of another build than ${BUILD}`);
  } catch (error) {
    await caches.delete(CACHE);
    throw error;  // install fails: the previous build's worker, if any, stays
  }
  await self.skipWaiting();
})()));

self.addEventListener("activate", (event) => event.waitUntil((async () => {
  for (const name of await caches.keys()) if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
  await self.clients.claim();
})()));

self.addEventListener("fetch", (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== "GET" || !IN_SHELL.has(url.origin + url.pathname)) return;
  event.respondWith(fetch(request).catch(async (error) => {
    const kept = await caches.match(request, { cacheName: CACHE, ignoreSearch: true });
    if (kept) return kept;
    throw error;
  }));
});

// The page asks which build it is served by (the tests, and a page that wants to say so).
self.addEventListener("message", (event) => {
  if (event.data?.type === "build?") event.source?.postMessage({ type: "build", build: BUILD });
});

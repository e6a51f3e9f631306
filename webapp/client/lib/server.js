// The Seam server as the client sees it: its client config (GET /api/client: API version, catalog,
// endpoints, engine settings), the catalog asked again before each routing, and the reports the client
// sends (self-checks, prediction outcomes), which wait while the server is unreachable. Every URL the server
// gives is made absolute against it, so the same code serves a page of the server's own and one of another origin.
import { EngineError, ErrorKind } from "./engine/errors.js";
import { remembered } from "./remembered.js";

// The API versions of the server this client speaks (router/client.py states the server's).
export const API_VERSIONS = [1];

const absolute = (server, path) => new URL(path, server).href;

// The catalog as the client uses it: every model's files at absolute URLs.
export const withAbsoluteUrls = (server, models) => models.map((m) => ({ ...m, base_url: absolute(server, m.base_url) }));

// The server's client config, with absolute URLs; a typed error that says why when there is none: the
// server is down, does not allow this page's origin, is not a Seam server, or speaks another API version.
export async function fetchConfig(server) {
  let response;
  try {
    response = await fetch(absolute(server, "api/client"), { cache: "no-store" });
  } catch (error) {
    throw await unreachable(server, error);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || typeof body.api_version !== "number")
    throw new EngineError(ErrorKind.ServerUnreachable, `${server} answered ${response.status} for its client config: ` +
                          "is it a Seam server? (it serves /api/client)");
  if (!API_VERSIONS.includes(body.api_version))
    throw new EngineError(ErrorKind.ApiVersion, `the Seam server at ${server} speaks API version ${body.api_version}; ` +
                          `this client speaks ${API_VERSIONS.join(", ")}: use the client it serves at ${absolute(server, body.client_url ?? "client/index.js")}`);
  return resolveConfig(server, body);
}

export function resolveConfig(server, config) {
  const endpoints = Object.fromEntries(Object.entries(config.endpoints).map(([name, path]) => [name, absolute(server, path)]));
  const vendor = Object.fromEntries(Object.entries(config.engine.vendor).map(([name, path]) => [name, absolute(server, path)]));
  return { ...config, endpoints, engine: { ...config.engine, vendor }, models: withAbsoluteUrls(server, config.models) };
}

// Why a fetch to the server failed. A browser tells a page nothing about a refused cross-origin request,
// so the client asks again without CORS: an (opaque) answer means the server is up and does not allow
// this origin.
async function unreachable(server, error) {
  const origin = self.location.origin;
  if (new URL(server).origin !== origin) {
    const up = await fetch(absolute(server, "healthz"), { mode: "no-cors", cache: "no-store" }).then(() => true, () => false);
    if (up) return new EngineError(ErrorKind.OriginNotAllowed, `the Seam server at ${server} is up but does not allow ` +
                                   `pages from ${origin} (it sent no CORS headers): its operator must add ${origin} to SEAM_ALLOWED_ORIGINS`);
  }
  return new EngineError(ErrorKind.ServerUnreachable, `the Seam server at ${server} is unreachable (${error.message}); ` +
                         "check that it is running and its address");
}

// The catalog as it is now, or null when the server cannot be asked (the caller keeps the one it has).
export async function fetchCatalog(config, server) {
  try {
    const response = await fetch(config.endpoints.catalog, { cache: "no-store" });
    return response.ok ? withAbsoluteUrls(server, (await response.json()).models) : null;
  } catch (error) {
    return null;
  }
}

// A decision for a probe report; an error that says why when there is none.
export async function askRouter(endpoint, report) {
  const response = await fetch(endpoint, { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(report) });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `router answered ${response.status}`);
  return body;
}

// A report for the operator (self-checks, prediction outcomes). The client decides either way, so it never
// waits for one; a report the server cannot be sent now (unreachable, or failing) waits in this browser
// (remembered.js: bounded), and goes out, oldest first, once the server answers again (sendWaitingReports).
// Resolves with whether the server took it now.
export async function report(endpoint, body) {
  const sent = await send(endpoint, body);
  if (sent) sendWaitingReports();
  else remembered.waitingReports([...remembered.waitingReports(), { endpoint, body, at: Date.now() }]);
  return sent;
}

// True once the server has the report: taken, or refused for good (a 4xx: sending it again cannot help).
async function send(endpoint, body) {
  try {
    const response = await fetch(endpoint, { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify(body) });
    return response.status < 500;
  } catch (error) {
    return false;
  }
}

let sending = null;

// Sends the reports that waited, in order, until one cannot be sent; one pass at a time. Called whenever the
// server answers the client. Resolves with how many went out.
export function sendWaitingReports() {
  sending ??= (async () => {
    let sent = 0;
    for (let waiting = remembered.waitingReports(); waiting.length; waiting = remembered.waitingReports()) {
      if (!(await send(waiting[0].endpoint, waiting[0].body))) break;
      // Another tab may have sent and dropped some meanwhile: drop this one by identity, not by position.
      remembered.waitingReports(remembered.waitingReports().filter((r) => r.at !== waiting[0].at ||
                                                                          r.endpoint !== waiting[0].endpoint));
      sent++;
    }
    return sent;
  })().finally(() => { sending = null; });
  return sending;
}

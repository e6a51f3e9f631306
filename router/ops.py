"""Operations: health, Prometheus metrics, and one log line per request."""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from router import metrics
from router.errors import ApiError
from router.hosts import operator_only

bp = Blueprint("ops", __name__)
log = logging.getLogger("seam.requests")
# Every response: scripts, workers, wasm and fetches from this origin only (the page has no inline script:
# its config is an inert application/json block), no framing, no content sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# With CROSS_ORIGIN_ISOLATED: the page gets SharedArrayBuffer, which the browser CPU build's threads share
# (webapp/client/lib/engine/cpu_threads.js). Everything the page loads comes from this origin; another
# origin's page that uses the artifacts reads them through CORS, which resource policy does not restrict.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@bp.get("/healthz")
def health():
    state = current_app.extensions["seam"]
    backend = state["cloud"]
    response = jsonify({"status": "ok", "models": len(state["catalog"].models),
                        "cloud": backend.name if backend else None, "engine_threads": getattr(backend, "threads", None)})
    # A page of an origin the server does not allow reads this opaquely (no-cors) to tell "not allowed" from
    # "unreachable" (webapp/client/lib/server.js): it must not be blocked as another site's resource.
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


@bp.get("/metrics")
def prometheus():
    operator_only()
    body, content_type = metrics.exposition(current_app.extensions["seam"]["fleet"])
    return Response(body, content_type=content_type)


@bp.before_app_request
def start_timer():
    g.started = time.time()


@bp.before_app_request
def catalog_is_sound():
    """Everything but /metrics needs the catalog: while the one on disk is broken, a 503 that says why."""
    problem = current_app.extensions["seam"]["catalog"].problem
    if problem and request.path != "/metrics":
        raise ApiError(503, f"the model catalog is broken: {problem}", code="catalog_invalid")


@bp.after_app_request
def log_request(response):
    seconds = time.time() - g.get("started", time.time())
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    metrics.REQUEST_SECONDS.labels(endpoint, str(response.status_code)).observe(seconds)
    log.info("%s %s %s %.3fs", request.method, request.path, response.status_code, seconds)
    response.headers.update(SECURITY_HEADERS)
    if current_app.config["CROSS_ORIGIN_ISOLATED"]:
        for name, value in ISOLATION_HEADERS.items():
            response.headers.setdefault(name, value)
    return response

"""HTTP API: the router (`POST /api/route`) and the OpenAI-compatible chat API (`/v1/...`)."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jsonschema
from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from router import grammar, metrics, routing
from router.cloud import ChatRequest
from router.engine import Sampling
from router.errors import ApiError
from router.pages import page_models

bp = Blueprint("api", __name__)
PROBE_SCHEMA = json.loads((Path(__file__).with_name("schemas") / "probe-report.v1.json").read_text())
ROLES = ("system", "user", "assistant")


def seam():
    return current_app.extensions["seam"]


def json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object (Content-Type: application/json)")
    return body


# --- router -------------------------------------------------------------------------------------------

@bp.post("/api/route")
def route():
    """Decide where the next answer runs, from the page's probe report."""
    probe = json_body()
    try:
        jsonschema.validate(probe, PROBE_SCHEMA)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(the report)"
        raise ApiError(400, f"invalid probe report at {where}: {error.message}", param=where) from None
    state = seam()
    backend = state["cloud"]
    server = routing.ServerState(cloud_available=bool(backend and backend.available),
                                 cloud_tokens_per_s=getattr(backend, "tokens_per_s", None),
                                 cloud_ttft_s=getattr(backend, "ttft_s", None))
    variants = state["catalog"].variants(probe.get("model"))
    decision = routing.decide(probe, variants, server, state["policy"])
    for cached in probe.get("cached_models", []):
        metrics.CLIENT_VERSIONS.labels(cached["id"], cached["version"]).inc()
    if probe.get("client_id"):
        state["fleet"].report_cached(probe["client_id"], probe.get("cached_models", []))
    metrics.ROUTE_DECISIONS.labels(decision.target, decision.reasons[0]["code"]).inc()
    return jsonify(decision.to_json())


@bp.get("/api/catalog")
def catalog():
    """The variants the page can load, as the page sees them (with their URLs); asked again before each
    routing, so a page open across a rebuild learns of new versions."""
    return jsonify({"models": page_models()})


@bp.post("/api/self-check")
def self_check():
    """A page's first-load self-check: did this device's answer equal the catalog's golden tokens?"""
    body = json_body()
    entry = seam()["catalog"].by_id(body.get("id")) if isinstance(body.get("id"), str) else None
    if entry is None:
        raise ApiError(404, "id must name a model variant in the catalog", "id", "model_not_found")
    if not isinstance(body.get("version"), str) or not isinstance(body.get("passed"), bool):
        raise ApiError(400, "version (string) and passed (true/false) are required", "passed")
    tokens = body.get("token_ids", [])
    if not isinstance(tokens, list) or len(tokens) > 256 or not all(isinstance(t, int) for t in tokens):
        raise ApiError(400, "token_ids must be a list of at most 256 integers", "token_ids")
    client = body.get("client_id") if isinstance(body.get("client_id"), str) else None
    adapter = str(body.get("adapter", ""))[:200]
    seam()["fleet"].report_self_check(client and client[:64], entry["id"], body["version"][:64], adapter,
                                      body["passed"], json.dumps(tokens))
    metrics.SELF_CHECKS.labels(entry["id"], body["version"][:64], "passed" if body["passed"] else "failed").inc()
    return jsonify({"recorded": True})


@bp.get("/api/fleet")
def fleet():
    """For operators: which model versions the clients hold, and how their self-checks went per adapter."""
    store = seam()["fleet"]
    latest = {m["id"]: m["version"] for m in seam()["catalog"].models}
    return jsonify({"catalog": latest, "cached": store.versions(), "self_checks": store.self_checks()})


# --- OpenAI-compatible API ----------------------------------------------------------------------------

@bp.get("/v1/models")
def models():
    backend = seam()["cloud"]
    ids = backend.model_ids() if backend else []
    return jsonify({"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "seam"}
                                               for i in ids]})


@bp.post("/v1/chat/completions")
def chat_completions():
    backend = seam()["cloud"]
    if backend is None:
        raise ApiError(503, "this server has no cloud engine: build a model or set SEAM_UPSTREAM_BASE_URL",
                       code="no_backend")
    req = parse_chat_request(json_body())
    started = time.time()
    stop = {"cancelled": False}
    chunks = backend.start(req, lambda: stop["cancelled"])
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(started)
    model = req.model or (backend.model_ids() or ["default"])[0]
    if req.stream:
        events = sse_events(chunks, completion_id, created, model, req.include_usage, backend.name, stop)
        return Response(stream_with_context(events), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    text, last = [], None
    for chunk in chunks:
        text.append(chunk.text)
        last = chunk
    metrics.TOKENS_SERVED.labels(backend.name).inc(last.completion_tokens)
    return jsonify({
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                     "finish_reason": last.finish_reason, "logprobs": None}],
        "usage": usage(last),
    })


def sse_events(chunks, completion_id, created, model, include_usage, backend_name, stop):
    def event(payload) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    def frame(delta, finish=None):
        return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    try:
        yield event(frame({"role": "assistant", "content": ""}))
        for chunk in chunks:
            if chunk.text:
                yield event(frame({"content": chunk.text}))
            if chunk.finish_reason:
                yield event(frame({}, chunk.finish_reason))
                metrics.TOKENS_SERVED.labels(backend_name).inc(chunk.completion_tokens)
                if include_usage:
                    yield event({**frame({}), "choices": [], "usage": usage(chunk)})
        yield "data: [DONE]\n\n"
    except ApiError as error:  # after the headers went out, errors travel inside the stream
        yield event({"error": {"message": error.message, "type": "server_error", "param": None, "code": error.code}})
    finally:
        stop["cancelled"] = True  # the client went away, or we are done: free the engine
        chunks.close()


def usage(chunk) -> dict:
    return {"prompt_tokens": chunk.prompt_tokens, "completion_tokens": chunk.completion_tokens,
            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens}


def parse_chat_request(body: dict) -> ChatRequest:
    """OpenAI's request shape, checked field by field; each refusal names the field."""
    config = current_app.config
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise ApiError(400, f"messages[{i}] must have a role ({', '.join(ROLES)}) and a string content",
                           f"messages[{i}]")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", "model")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", config["DEFAULT_MAX_TOKENS"]))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= config["MAX_TOKENS_LIMIT"]:
        raise ApiError(400, f"max_tokens must be an integer from 1 to {config['MAX_TOKENS_LIMIT']}", "max_tokens")
    temperature = number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise ApiError(400, "top_p must be greater than 0", "top_p")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ApiError(400, "seed must be a non-negative integer", "seed")
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1: this server returns one choice", "n")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "stop must be a string or a list of at most 4 strings", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    continue_final = body.get("continue_final_message", False)
    if not isinstance(continue_final, bool):
        raise ApiError(400, "continue_final_message must be true or false", "continue_final_message")
    if continue_final and messages[-1]["role"] != "assistant":
        raise ApiError(400, "continue_final_message needs the last message to be the assistant's answer so far",
                       "continue_final_message")
    try:
        response_format = grammar.parse_response_format(body.get("response_format"))
    except grammar.SchemaError as error:
        raise ApiError(400, str(error), error.param, "invalid_schema") from None
    return ChatRequest(model=model, messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                       stream=stream, include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
                       sampling=Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                         stop=tuple(stop)),
                       continue_final=continue_final, response_format=response_format)


def number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low} to {high}", name)
    return float(value)

"""HTTP API: the router (`POST /api/route`) and the OpenAI-compatible chat API (`/v1/...`)."""
from __future__ import annotations

import json
import math
import time
import uuid
from contextlib import closing

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from router import grammar, metrics, routing
from router.client import browser_models
from router.cloud import ChatRequest
from router.errors import ApiError, error_body
from router.fleet import client_network
from router.hosts import operator_only
from router.sampling import SamplingError, parse_sampling
from router.serving import UNSENT_BYTES
from router.tools import CallReader, ToolError, check_tool_messages, parse_tools
from router.validation import check_body

bp = Blueprint("api", __name__)


def seam():
    return current_app.extensions["seam"]


def json_body() -> dict:
    """The request's JSON object. Strict: NaN, Infinity and numbers beyond float range are not JSON (a
    reply echoing them would not be either), and nesting too deep to parse is refused like any bad JSON."""
    if not request.is_json:
        raise ApiError(400, "the request body must be a JSON object (Content-Type: application/json)")
    try:
        body = json.loads(request.get_data(cache=False), parse_constant=not_json, parse_float=finite_float)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply to be read") from None
    except ValueError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object (Content-Type: application/json)")
    try:  # a lone UTF-16 surrogate ("\\ud800") parses, but is not text: no tokenizer, database or log takes it
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ApiError(400, "the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not "
                       "text: send valid Unicode") from None
    return body


def not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the range of a number")
    return value


# --- router -------------------------------------------------------------------------------------------

@bp.post("/api/route")
def route():
    """Decide where the next answer runs, from the page's probe report."""
    probe = json_body()
    check_body(probe, "probe-report.v1.json")
    state = seam()
    catalog, fleet, policy = state["catalog"], state["fleet"], state["policy"]
    variants = catalog.variants(probe.get("model"))
    adapter_class = routing.adapter_class(probe)
    cached = {(m["id"], label) for m in probe.get("cached_models", [])
              if (label := catalog.version_label(m["id"], m["version"]))}
    for model_id, version in cached:
        metrics.CLIENT_VERSIONS.labels(model_id, version).inc()
    if probe.get("client_id"):  # what it holds, and how fast it really ran (which calibrates the fleet)
        ratios = [r for v in variants if (r := routing.calibration_ratio(probe, v, policy)) is not None]
        fleet.report_probe(probe["client_id"], fleet.source_of(request.remote_addr), sorted(cached), adapter_class,
                           ratios[0] if ratios else None)
    calibration = fleet.calibration(adapter_class, policy["calibration"]["min_sources"]) if adapter_class else None
    decision = routing.decide(probe, variants, server_state(calibration), policy)
    metrics.ROUTE_DECISIONS.labels(decision.target, decision.reasons[0]["code"]).inc()
    return jsonify(decision.to_json())


def server_state(calibration: float | None) -> routing.ServerState:
    """The cloud side of a decision: what the backend measured, and the wait behind the chats in flight
    (an embedded engine answers one at a time; an upstream answers them side by side)."""
    backend, slots = seam()["cloud"], seam()["slots"]
    wait = slots.in_flight * (backend.answer_s or 0) if backend is not None and backend.serial else 0.0
    return routing.ServerState(cloud_available=bool(backend and backend.available),
                               cloud_tokens_per_s=getattr(backend, "tokens_per_s", None),
                               cloud_ttft_s=getattr(backend, "ttft_s", None),
                               queue_wait_s=wait, cloud_full=slots.in_flight >= slots.limit, calibration=calibration,
                               default_max_tokens=current_app.config["DEFAULT_MAX_TOKENS"])


@bp.post("/api/outcome")
def outcome():
    """After an answer, the page tells how the router's prediction for it compared with what happened (no
    text, only the numbers): /metrics keeps the ratios, per target, as histograms."""
    body = json_body()
    check_body(body, "outcome-report.v1.json")
    for measure in ("ttft_s", "tokens_per_s"):
        predicted, actual = (body[part].get(measure) for part in ("predicted", "actual"))
        if predicted and actual:
            metrics.PREDICTION_RATIO.labels(body["target"], measure).observe(actual / predicted)
    return jsonify({"recorded": True})


@bp.get("/api/catalog")
def catalog():
    """The variants the page can load, as the page sees them (with their URLs); asked again before each
    routing, so a page open across a rebuild learns of new versions."""
    return jsonify({"models": browser_models()})


@bp.post("/api/self-check")
def self_check():
    """A page's first-load self-check: did this device's answer equal the catalog's golden tokens?"""
    body = json_body()
    catalog = seam()["catalog"]
    # first: a report on a variant this server does not know is a 404, whatever else it holds
    entry = catalog.by_id(body.get("id")) if isinstance(body.get("id"), str) else None
    if entry is None:
        raise ApiError(404, "id must name a model variant in the catalog", "id", "model_not_found")
    check_body(body, "self-check-report.v1.json")
    tokens = body.get("token_ids", [])  # checked, not stored: the result is what counts
    if not all(type(t) is int for t in tokens):  # JSON Schema counts 1.0 as an integer; an id is written as one
        raise ApiError(400, "token_ids must be a list of at most 256 token ids (integers from 0 to 2^31 - 1)",
                       "token_ids")
    version = catalog.version_label(entry["id"], body["version"])
    fleet = seam()["fleet"]
    if fleet.report_self_check(body["client_id"], fleet.source_of(request.remote_addr), entry["id"], version,
                               body.get("adapter", ""), body["passed"]):
        metrics.SELF_CHECKS.labels(entry["id"], version, "passed" if body["passed"] else "failed").inc()
    return jsonify({"recorded": True})


@bp.get("/api/fleet")
def fleet():
    """For operators: which model versions the clients hold, and how their self-checks went per adapter."""
    operator_only()
    store = seam()["fleet"]
    latest = {m["id"]: m["version"] for m in seam()["catalog"].models}
    return jsonify({"catalog": latest, "cached": store.versions(), "self_checks": store.self_checks(),
                    "calibration": store.calibrations(seam()["policy"]["calibration"]["min_sources"])})


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
    slot = seam()["slots"].take(client_network(request.remote_addr))  # an IPv6 /64 is one client, as in the fleet
    response = None
    try:
        response = answer(backend, req, slot.release)
        return response
    finally:
        if response is None or not req.stream:
            slot.release()  # answered, or failed before a stream began
        else:  # a stream ends when the server closes it, whether or not it ever began (a client that reset)
            response.call_on_close(slot.release)


def answer(backend, req: ChatRequest, release) -> Response:
    stop = {"cancelled": False}
    client_left = request.environ.get("waitress.client_disconnected", lambda: False)
    unread = unread_check(request.environ, current_app.config["STREAM_BUFFER_BYTES"]) if req.stream else (lambda: False)
    chunks = backend.start(req, lambda: stop["cancelled"] or client_left() or unread())
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    model = req.model or (backend.model_ids() or ["default"])[0]
    reader = tool_reader(backend, req)
    if req.stream:
        def ended():
            stop["cancelled"] = True  # the client went away, or we are done: free the engine
            release()
        events = sse_events(chunks, completion_id, created, model, req.include_usage, backend.name, ended, unread, reader)
        return Response(stream_with_context(events), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    pieces, last = [], None
    with closing(chunks):
        for chunk in chunks:
            pieces += reader.push(chunk.text) if reader else [chunk.text]
            last = chunk
    if last is None:
        raise ApiError(499, "the client closed the connection before the answer began", code="client_closed")
    metrics.TOKENS_SERVED.labels(backend.name).inc(last.completion_tokens)
    message = assistant_message(pieces + (reader.end() if reader else []))
    return jsonify({
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(last.finish_reason, reader),
                     "logprobs": None}],
        "usage": usage(last),
    })


def tool_reader(backend, req: ChatRequest) -> CallReader | None:
    """The reader of an answer's tool calls. One going on with an answer begun elsewhere first reads what was
    given (its events were sent by the path that gave it), so that a call opened there goes on here, with
    the index it had."""
    if not req.tools:
        return None
    reader = CallReader(backend.tool_format(req.model), req.tools.names())
    if req.continue_final:
        reader.push(req.messages[-1]["content"])
    return reader


def assistant_message(pieces: list) -> dict:
    """The answer's message from its pieces: text, and (with tools) CallReader's call events."""
    content = "".join(p for p in pieces if isinstance(p, str))
    calls: dict[int, dict] = {}
    for event in (p for p in pieces if isinstance(p, dict)):
        call = calls.setdefault(event["index"], {"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
        if "id" in event:
            call["id"], call["function"]["name"] = event["id"], event["name"]
        call["function"]["arguments"] += event.get("arguments", "")
    if not calls:
        return {"role": "assistant", "content": content}
    return {"role": "assistant", "content": content.strip() or None, "tool_calls": [calls[i] for i in sorted(calls)]}


def finish_reason(finish: str, reader: CallReader | None) -> str:
    """OpenAI's: an answer that ended after calling tools ends with "tool_calls"."""
    return "tool_calls" if reader and reader.calls and finish == "stop" else finish


def stream_deltas(pieces: list) -> list[dict]:
    """OpenAI's stream deltas for pieces of an answer: text as content, a call's opening with its id and
    name, then its arguments piece by piece."""
    deltas = []
    for piece in pieces:
        if isinstance(piece, str):
            deltas.append({"content": piece})
        elif "id" in piece:
            deltas.append({"tool_calls": [{"index": piece["index"], "id": piece["id"], "type": "function",
                                           "function": {"name": piece["name"], "arguments": ""}}]})
        else:
            deltas.append({"tool_calls": [{"index": piece["index"], "function": {"arguments": piece["arguments"]}}]})
    return deltas


def unread_check(environ, limit: int):
    """Whether a stream's client does not read: more of it waits unsent than SEAM_STREAM_BUFFER_BYTES (beyond what
    the kernel's socket buffers hold). It stops there, so no one holds the engine and a slot by not reading."""
    unsent = environ.get(UNSENT_BYTES)
    if unsent is None:  # not under router/serving.py (a test client): nothing is buffered
        return lambda: False
    logger, stopped = current_app.logger, []

    def unread() -> bool:
        if not stopped and unsent() > limit:
            stopped.append(True)
            logger.info("stopped a stream its client does not read (%d bytes unsent)", unsent())
        return bool(stopped)
    return unread


def sse_events(chunks, completion_id, created, model, include_usage, backend_name, ended, unread, reader=None):
    def event(payload) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    def frame(delta, finish=None):
        return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    try:
        yield event(frame({"role": "assistant", "content": ""}))
        for chunk in chunks:
            # with its tokens, which a page hands to the other path if this one fails mid-answer; a last chunk
            # may have tokens and no text (an answer that ends inside a UTF-8 character), and still carries them
            pieces = ((reader.push(chunk.text) if reader else [chunk.text]) if chunk.text else []) + \
                (reader.end() if reader and chunk.finish_reason else [])
            # (with tools, the piece's own text too: calls' markers are no content, yet a handover goes on from them)
            extra = {"seam": {"completion_tokens": chunk.completion_tokens, "token_ids": chunk.token_ids,
                              **({"text": chunk.text} if reader else {})}} if chunk.token_ids else {}
            for delta in stream_deltas(pieces) or ([{"content": ""}] if extra else []):
                yield event({**frame(delta), **extra})
                extra = {}
            if chunk.finish_reason:
                yield event(frame({}, finish_reason(chunk.finish_reason, reader)))
                metrics.TOKENS_SERVED.labels(backend_name).inc(chunk.completion_tokens)
                if include_usage:
                    yield event({**frame({}), "choices": [], "usage": usage(chunk)})
        if unread():  # what its client finds if it ever reads on
            yield event(error_body(408, f"the answer stopped: more than {current_app.config['STREAM_BUFFER_BYTES']} "
                                        "bytes of it waited unread (SEAM_STREAM_BUFFER_BYTES); read the stream as "
                                        "it comes", code="stream_not_read"))
    except ApiError as error:  # after the headers went out, errors travel inside the stream
        yield event(error.body())
    except Exception:  # noqa: BLE001 -- the stream still ends as the protocol says, and the trace is logged
        current_app.logger.exception("a streamed answer failed")
        yield event(error_body(500, "the answer failed on the server; it keeps serving others"))
    finally:
        ended()
        chunks.close()
    yield "data: [DONE]\n\n"


def usage(chunk) -> dict:
    return {"prompt_tokens": chunk.prompt_tokens, "completion_tokens": chunk.completion_tokens,
            "total_tokens": chunk.prompt_tokens + chunk.completion_tokens}


def parse_chat_request(body: dict) -> ChatRequest:
    """OpenAI's request shape: its schema first, then what a schema cannot say; each refusal names the field."""
    config = current_app.config
    check_body(body, "chat-completions-request.v1.json")
    messages, model = body["messages"], body.get("model")
    try:
        check_tool_messages(messages)
    except ToolError as error:
        raise ApiError(400, str(error), error.param) from None
    try:  # in code, in the words of the browser engine's parseSampling (sampling.js)
        sampling = parse_sampling(body, config["DEFAULT_MAX_TOKENS"], config["MAX_TOKENS_LIMIT"])
    except SamplingError as error:
        raise ApiError(400, str(error), error.param) from None
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    continue_final = body.get("continue_final_message", False)
    if continue_final and (messages[-1]["role"] != "assistant" or messages[-1].get("content") is None):
        raise ApiError(400, "continue_final_message needs the last message to be the assistant's answer so far",
                       "continue_final_message")
    continue_ids = body.get("continue_token_ids")
    if continue_ids is not None and not (continue_final and len(continue_ids) <= config["MAX_TOKENS_LIMIT"]
                                         and all(type(i) is int for i in continue_ids)):  # 1.0 is not an id
        raise ApiError(400, f"continue_token_ids must be a list of at most {config['MAX_TOKENS_LIMIT']} token ids, "
                       "sent with continue_final_message", "continue_token_ids")
    try:
        response_format = grammar.parse_response_format(body.get("response_format"))
    except grammar.SchemaError as error:
        raise ApiError(400, str(error), error.param, "invalid_schema") from None
    try:
        tools = parse_tools(body)
    except ToolError as error:
        raise ApiError(400, str(error), error.param) from None
    if tools and response_format:
        raise ApiError(400, "tools and response_format cannot be asked together yet: a tool's parameters already "
                       "constrain its call; drop one of them", "response_format")
    return ChatRequest(model=model, messages=[kept_fields(m) for m in messages],
                       stream=stream, include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
                       sampling=sampling, continue_final=continue_final,
                       continue_ids=None if continue_ids is None else tuple(continue_ids), response_format=response_format,
                       tools=tools)


def kept_fields(message: dict) -> dict:
    """What the engine reads of a message: its role and text, and a tool conversation's calls and ids."""
    return {key: message[key] for key in ("role", "content", "tool_calls", "tool_call_id") if key in message}

"""The cloud path: the embedded CPU engine, or any OpenAI-compatible upstream. Both turn a validated
chat request into a stream of `Chunk`s, so the API formats one shape whatever answered.

`start()` does everything that can fail with a clean HTTP error (unknown model, context overflow, busy
engine, unreachable upstream) before the first byte of a response is sent.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import requests

from router.answer import Chunk, EngineError
from router.catalog import Catalog
from router.errors import ApiError
from router.grammar import SchemaBusy, SchemaError
from router.redact import REDACTED, Redactor
from router.sampling import Sampling
from router.tools import Tools, for_template
from router.threads import use_threads

if TYPE_CHECKING:  # the engine loads TVM: imported only by a server that runs one (EmbeddedBackend._load)
    from router.engine import Engine

log = logging.getLogger("seam")

UPSTREAM_KEY_ENV = "SEAM_UPSTREAM_API_KEY"
# Bearer tokens, and the shapes of common API keys (sk-..., hf_..., long opaque tokens).
CREDENTIAL = re.compile(r"(?i)bearer\s+\S+|\b(?:sk|pk|rk|hf|gsk|xai)[-_][A-Za-z0-9_\-]{8,}|\b[A-Za-z0-9_\-]{32,}\b")


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    messages: list[dict]
    stream: bool
    include_usage: bool
    sampling: Sampling
    continue_final: bool = False  # go on with the last (assistant) message instead of starting a new one
    continue_ids: tuple[int, ...] | None = None  # that message's own tokens, from the engine that drew them
    response_format: dict | None = None  # grammar.parse_response_format's result
    tools: Tools | None = None  # tools.parse_tools's result: the functions the answer may call


WARM_UP = [{"role": "user", "content": "Say hello."}]
WARM_UP_TOKENS = 16


class EmbeddedBackend:
    """The CPU engine in this process: one answer at a time, so a new chat waits behind those in flight."""

    name = "embedded"
    serial = True

    def __init__(self, catalog: Catalog, schema_timeout_s: float, cache_tokens: int = 0, cache_conversations: int = 8):
        self.catalog, self.schema_timeout_s = catalog, schema_timeout_s
        self.cache_tokens, self.cache_conversations = cache_tokens, cache_conversations
        self._engines: dict[str, Engine] = {}
        self._load_lock = threading.Lock()
        self.tokens_per_s: float | None = None  # the latest answer's, as the router predicts the next one
        self.ttft_s: float | None = None
        self.answer_s: float | None = None      # a running average of how long an answer holds the engine
        self.threads: int | None = None         # what router/threads.py chose

    @property
    def available(self) -> bool:
        return self.catalog.cloud_variant(None) is not None

    def model_ids(self) -> list[str]:
        return self.catalog.model_names()

    def engine(self, model: str | None) -> Engine:
        entry = self.catalog.cloud_variant(model)
        if entry is None:
            known = ", ".join(self.catalog.model_names()) or "none (run `make build-model`)"
            raise ApiError(404, f"the model {model!r} does not exist; models here: {known}", "model", "model_not_found")
        with self._load_lock:
            engine = self._engines.get(entry["id"])
            if engine is None or engine.entry["version"] != entry["version"]:  # a rebuild replaced it
                engine = self._engines[entry["id"]] = self._load(entry)
            return engine

    def _load(self, entry: dict) -> Engine:
        """A variant's engine; files missing or not as the catalog recorded them are a 503 that says so (the
        path only in the log), and the next request tries again, so a rebuild mends it without a restart."""
        from modelrun.model import ModelFilesError
        from router.engine import Engine
        try:
            return Engine(self.catalog.folder / entry["path"], entry, self.schema_timeout_s, self.cache_tokens,
                          self.cache_conversations)
        except Exception as error:  # noqa: BLE001 -- whatever a broken folder raises, the client gets the same 503
            log.error("the variant %s cannot be loaded from %s: %s", entry["id"], self.catalog.folder / entry["path"], error)
            reason = str(error) if isinstance(error, ModelFilesError) else "its files are missing or unreadable"
            raise ApiError(503, f"the model {entry['id']} cannot be loaded on the server ({reason}): rebuild it with "
                           "`make build-model`", "model", "model_unavailable") from None

    def start(self, req: ChatRequest, cancelled) -> Iterator[Chunk]:
        engine = self.engine(req.model)
        messages, tools = for_template(req.messages, req.tools, engine.tool_format)
        try:
            engine.check_size(messages, req.sampling.max_tokens)
            prompt = engine.prompt_ids(messages, req.continue_final, req.continue_ids, tools)
            engine.check_fits(prompt, req.sampling.max_tokens)
        except EngineError as error:
            raise ApiError(error.status, str(error), error.param, error.code) from None
        constraint = self.constraint(engine, req)
        return self._run(engine, prompt, req.sampling, cancelled, constraint)

    def tool_format(self, model: str | None) -> str:
        """How the model answering `model` writes its tool calls (router/tools.py)."""
        return self.engine(model).tool_format

    def warm_up(self) -> str:
        """Two short answers from the default model at startup: the first loads and warms the engine, the
        second is measured, so that the router compares a measured cloud from the first decision (a fresh
        server whose answers all go to browsers would otherwise never measure). Says what it measured."""
        engine = self.engine(None)
        prompt = engine.prompt_ids(WARM_UP)
        for _ in range(2):
            for _ in self._run(engine, prompt, Sampling(max_tokens=WARM_UP_TOKENS, temperature=0.0), lambda: False,
                               None):
                pass
        self.answer_s = None  # a warm-up is no chat: the queue's wait is learnt from chats only
        return f"{engine.id}: {self.tokens_per_s:.1f} tokens/s, first token in {self.ttft_s:.2f} s"

    @staticmethod
    def constraint(engine: Engine, req: ChatRequest):
        if req.response_format is None and req.tools is None:
            return None
        try:
            constraint = engine.tool_constraint(req.tools) if req.tools else engine.constraint(req.response_format)
        except SchemaError as error:
            raise ApiError(400, str(error), error.param, "invalid_schema") from None
        except SchemaBusy as error:
            raise ApiError(503, str(error), code="server_busy", headers={"Retry-After": "5"}) from None
        if req.continue_final and not constraint.accept_text(req.messages[-1]["content"]):
            raise ApiError(400, "the answer to continue is no text or call the tools allow" if req.tools else
                           "the answer to continue does not follow the response_format's schema",
                           "continue_final_message", "invalid_schema")
        return constraint

    def _run(self, engine: Engine, prompt, sampling, cancelled, constraint) -> Iterator[Chunk]:
        for chunk in engine.generate(prompt, sampling, cancelled, constraint):
            if chunk.finish_reason:
                self.answer_s = chunk.engine_s if self.answer_s is None else 0.7 * self.answer_s + 0.3 * chunk.engine_s
                if chunk.completion_tokens > 1:
                    self.ttft_s = chunk.ttft_s
                    self.tokens_per_s = (chunk.completion_tokens - 1) / max(chunk.engine_s - chunk.ttft_s, 1e-6)
            yield chunk


class UpstreamBackend:
    """Forwards to an OpenAI-compatible server. Its key comes from the environment, per request."""

    name = "upstream"
    available = True
    serial = False  # it answers side by side: no queue of ours to wait in
    answer_s = None
    tokens_per_s: float | None = None  # measured on its latest answer
    ttft_s: float | None = None

    def __init__(self, base_url: str, model: str | None, timeout_s: float):
        self.base_url, self.model, self.timeout_s = base_url.rstrip("/"), model, timeout_s

    def model_ids(self) -> list[str]:
        return [self.model] if self.model else []

    def start(self, req: ChatRequest, cancelled) -> Iterator[Chunk]:
        if req.tools or any(m["role"] == "tool" or m.get("tool_calls") for m in req.messages):
            raise ApiError(400, "tools are answered by this server's own engine only; through an upstream model "
                           "server they are not supported yet: send the request to the upstream directly", "tools")
        s = req.sampling
        body = {"model": self.model or req.model, "messages": req.messages, "stream": True,
                "stream_options": {"include_usage": True}, "max_tokens": s.max_tokens, "temperature": s.temperature,
                "top_p": s.top_p}
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if req.response_format:
            body["response_format"] = req.response_format["openai"]
        if req.continue_final:  # vLLM's name for it; servers without it start a new message instead
            body.update(continue_final_message=True, add_generation_prompt=False)
        headers = {"Accept": "text/event-stream"}
        if os.environ.get(UPSTREAM_KEY_ENV):
            headers["Authorization"] = f"Bearer {os.environ[UPSTREAM_KEY_ENV]}"
        started = time.perf_counter()
        try:
            response = requests.post(f"{self.base_url}/chat/completions", json=body, headers=headers, stream=True,
                                     timeout=(min(5.0, self.timeout_s), self.timeout_s))
        except requests.Timeout:
            raise ApiError(504, f"the upstream model server did not answer within {self.timeout_s:.0f}s",
                           code="upstream_timeout") from None
        except requests.RequestException:
            raise ApiError(502, "the upstream model server is unreachable", code="upstream_unreachable") from None
        if response.status_code >= 400:
            message = upstream_message(response)
            response.close()
            if response.status_code >= 500 or response.status_code in (401, 403, 407):  # its failure, or our key's
                raise ApiError(502, f"the upstream model server failed ({response.status_code}): {message}",
                               code="upstream_error")
            raise ApiError(response.status_code, f"the upstream model server refused the request: {message}")
        return self._chunks(response, cancelled, started)

    def _chunks(self, response, cancelled, started: float) -> Iterator[Chunk]:
        finish, usage, first = None, {}, None
        redactor = Redactor(os.environ.get(UPSTREAM_KEY_ENV))  # an upstream that echoes the request into the answer
        try:
            for line in response.iter_lines(decode_unicode=True):
                if cancelled():
                    break
                if not line or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                text, finish, usage = read_event(data, finish, usage)
                text = redactor.push(text)
                if text:
                    first = first or time.perf_counter()
                    yield Chunk(text)
        except requests.RequestException:
            broke = ApiError(502, "the upstream model server broke off its answer", code="upstream_error")
        except (ValueError, TypeError, AttributeError):
            broke = ApiError(502, "the upstream model server sent a malformed event stream", code="upstream_error")
        else:
            broke = None
        finally:
            response.close()
        if tail := redactor.flush():  # the text held back, whole forms of the key redacted, before any error
            yield Chunk(tail)
        if broke:
            raise broke
        tokens = usage.get("completion_tokens", 0)
        if first and tokens > 1:  # the upstream's recent latency and speed, for the router
            self.ttft_s = first - started
            self.tokens_per_s = (tokens - 1) / max(time.perf_counter() - first, 1e-6)
        yield Chunk("", finish_reason=finish or "stop", prompt_tokens=usage.get("prompt_tokens", 0),
                    completion_tokens=tokens)


def read_event(data: str, finish, usage) -> tuple[str, str | None, dict]:
    """One OpenAI stream event: (new text, finish reason so far, usage so far)."""
    event = json.loads(data)
    usage = event.get("usage") or usage
    text = ""
    for choice in event.get("choices") or []:
        text += str((choice.get("delta") or {}).get("content") or "")
        finish = choice.get("finish_reason") or finish
    return text, finish, usage


def upstream_message(response) -> str:
    """A short account of an upstream's refusal. Its body is never passed on as it is: error bodies can
    echo the request, key included, so only its error message is kept, short and scrubbed of anything
    shaped like a credential."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
    message = CREDENTIAL.sub(REDACTED, Redactor(os.environ.get(UPSTREAM_KEY_ENV)).text(message))
    return message[:200]


def make_backend(config: dict, catalog: Catalog):
    if config["UPSTREAM_BASE_URL"]:
        return UpstreamBackend(config["UPSTREAM_BASE_URL"], config["UPSTREAM_MODEL"], config["UPSTREAM_TIMEOUT_S"])
    if config["EMBEDDED_ENGINE"]:
        backend = EmbeddedBackend(catalog, config["SCHEMA_TIMEOUT_S"], config["KV_CACHE_TOKENS"],
                                  config["KV_CACHE_CONVERSATIONS"])
        backend.threads = use_threads(config["THREADS"])  # before any engine runs a parallel loop
        return backend
    return None

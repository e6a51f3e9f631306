"""The compilers of structured output: a pool of child processes that turn a checked schema into a grammar.

xgrammar compiles the JSON schema against the model's vocabulary, in a process of its own so that a
compile that runs too long can be stopped without stopping the server.
"""
from __future__ import annotations

import json
import multiprocessing
import queue
import re
import threading
import time

import xgrammar

from router.grammar.matcher import Constraint
from router.grammar.schema_checks import SchemaError

# One JSON layout for both paths: compact, with a space after ',' and ':' (the way json.dumps writes),
# and no free whitespace, which small models otherwise fill until max_tokens.
JSON_STYLE = {"any_whitespace": False, "separators": [", ", ": "]}
COMPILE_TIMEOUT_S = 10.0  # a schema that compiles longer is refused and its compile stopped (SEAM_SCHEMA_TIMEOUT_S)


class Grammars:
    """Compiles response formats for one model's vocabulary, in child processes (CompilerProcess): a schema
    that compiles too long is refused and its compile stopped, and no other request waits behind it, only
    other structured answers, for a free compiler, at most COMPILE_TIMEOUT_S."""

    def __init__(self, tokenizer, config: dict, timeout_s: float = COMPILE_TIMEOUT_S, processes: int = 2):
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        encoded = [""] * config["vocab_size"]
        for token, token_id in vocab.items():
            if token_id < len(encoded):
                encoded[token_id] = token
        info = config.get("tokenizer_info")
        if info is None:
            raise SchemaError("this model was built before structured output existed (its mlc-chat-config.json "
                              "has no tokenizer_info): rebuild it with `make build-model`", "model")
        self.vocab = {"encoded_vocab": encoded, "vocab_type": info["vocab_type"], "vocab_size": config["vocab_size"],
                      "stop_token_ids": config["stop_token_ids"], "add_prefix_space": info["add_prefix_space"]}
        self.info = tokenizer_info(self.vocab)
        self.timeout_s = timeout_s
        self.idle: queue.Queue[CompilerProcess] = queue.Queue()
        self.free_places = threading.Semaphore(processes)  # compilers that may still be started

    def constraint(self, response_format: dict) -> "Constraint":
        return self._compiled(("json_schema", json.dumps(response_format["schema"]), response_format["strict"]),
                              "response_format.json_schema.schema")

    def tool_constraint(self, tag: dict) -> "Constraint":
        """The mask for an answer that may (or must) call tools: `tag` is router/tools.py's structural tag."""
        return self._compiled(("structural_tag", json.dumps(tag)), "tools")

    def _compiled(self, request: tuple, param: str) -> "Constraint":
        compiler = self._take()
        try:
            serialized = compiler.compile(request, param, timeout_s=self.timeout_s)
        except BaseException:
            compiler.stop()
            self.free_places.release()
            raise
        self.idle.put(compiler)
        constraint = Constraint(xgrammar.CompiledGrammar.deserialize_json(serialized, self.info), self.info.vocab_size)
        if not constraint.can_start():  # every logit would be -inf, and the sampler would fail with a 500
            raise SchemaError(NO_FIRST_TOKEN, param)
        return constraint

    def _take(self) -> "CompilerProcess":
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                return self.idle.get_nowait()
            except queue.Empty:
                pass
            if self.free_places.acquire(blocking=False):
                return CompilerProcess(self.vocab)
            try:
                return self.idle.get(timeout=0.05)
            except queue.Empty:
                continue
        raise SchemaBusy(f"every schema compiler stayed busy for {self.timeout_s:.0f} s; retry shortly")


# A grammar no token may start (a loop of rules that read nothing, should check_schema miss one).
NO_FIRST_TOKEN = "the schema cannot be compiled to a grammar: no JSON value can start it (does it refer to itself?)"


class SchemaBusy(Exception):
    """No compiler came free in time: the server is busy, the schema may be fine."""


def tokenizer_info(vocab: dict) -> "xgrammar.TokenizerInfo":
    return xgrammar.TokenizerInfo(vocab["encoded_vocab"], xgrammar.VocabType[vocab["vocab_type"].upper()],
                                  vocab_size=vocab["vocab_size"], stop_token_ids=vocab["stop_token_ids"],
                                  add_prefix_space=vocab["add_prefix_space"])


class CompilerProcess:
    """xgrammar's compiler in a process of its own, so a compile can be stopped: on timeout (or a crash)
    the process is ended. It answers with the compiled grammar serialized (milliseconds to read back)."""

    def __init__(self, vocab: dict):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the server's threads
        self.conn, child = context.Pipe()
        self.process = context.Process(target=compiler_main, args=(child, vocab), daemon=True,
                                       name="seam-schema-compiler")
        self.process.start()
        child.close()
        self.fresh = True  # its first compile waits for it to start too

    def compile(self, request: tuple, param: str, timeout_s: float) -> str:
        """`request`: ("json_schema", schema, strict) or ("structural_tag", tag); `param` names the request's
        field in errors."""
        self.conn.send(request)
        started, self.fresh = self.fresh, False
        if not self.conn.poll(timeout_s + (STARTUP_S if started else 0)):
            raise SchemaError(f"the schema took longer than {timeout_s:.0f} s to compile: simplify it (fewer or "
                              "shorter enum values, less nesting)", param)
        try:
            ok, result = self.conn.recv()
        except EOFError:
            raise SchemaError("the schema cannot be compiled to a grammar: the compiler stopped on it", param) from None
        if not ok:
            raise SchemaError(f"the schema cannot be compiled to a grammar: {result}", param)
        return result

    def stop(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


STARTUP_S = 5.0  # a new compiler process loads xgrammar and the vocabulary before its first compile


def compiler_main(conn, vocab: dict) -> None:
    """The child's loop: a request (CompilerProcess.compile) in, (True, serialized grammar) or (False, message)
    out."""
    compiler = xgrammar.GrammarCompiler(tokenizer_info(vocab), max_threads=1)
    while True:
        try:
            kind, *request = conn.recv()
        except EOFError:
            return
        try:
            if kind == "json_schema":
                schema, strict = request
                compiled = compiler.compile_json_schema(schema, strict_mode=strict, **json_style())
            else:
                compiled = compiler.compile_structural_tag(json.dumps(in_json_style(json.loads(request[0]))))
            conn.send((True, compiled.serialize_json()))
        except Exception as error:  # noqa: BLE001 -- RuntimeError mostly; any other is still the schema's refusal
            conn.send((False, xgrammar_message(error)))


def json_style() -> dict:
    return {"any_whitespace": JSON_STYLE["any_whitespace"], "separators": tuple(JSON_STYLE["separators"])}


def in_json_style(node):
    """A structural tag whose json_schema contents are written as grammars in JSON_STYLE: a structural tag's
    own JSON allows any whitespace, which small models fill until max_tokens."""
    if isinstance(node, list):
        return [in_json_style(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "json_schema":
        return {"type": "grammar", "grammar": str(xgrammar.Grammar.from_json_schema(json.dumps(node["json_schema"]),
                                                                                   **json_style()))}
    return {key: in_json_style(value) for key, value in node.items()}


def xgrammar_message(error: Exception) -> str:
    """xgrammar's C++ errors start with a timestamp and a source location, and a failed check with its
    C++ condition; keep the sentence (as grammar.js does)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    text = re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", lines[0])
    return re.sub(r"^Check failed: \(.*\) is false: ", "", text)

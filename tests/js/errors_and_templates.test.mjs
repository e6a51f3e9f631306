// Which engine errors are the request's (the user sees them; no handover) and the chat template's refusal.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Template } from "../../webapp/node_modules/@huggingface/jinja/dist/index.js";
import { ChatTemplate } from "../../webapp/client/lib/engine/chat_template.js";
import { EngineError, ErrorKind, REQUEST_ERRORS } from "../../webapp/client/lib/engine/errors.js";

test("request errors are told apart from failures of the browser", () => {
  for (const kind of [ErrorKind.ContextWindow, ErrorKind.InvalidSchema, ErrorKind.InvalidRequest, ErrorKind.TemplateRefused])
    assert.ok(REQUEST_ERRORS.has(kind), kind);
  for (const kind of [ErrorKind.DeviceLost, ErrorKind.GPUExecution, ErrorKind.Shader, ErrorKind.Restarted])
    assert.ok(!REQUEST_ERRORS.has(kind), kind);
});

test("an engine error keeps its kind across the worker boundary", () => {
  const error = EngineError.fromJSON(JSON.parse(JSON.stringify(new EngineError(ErrorKind.DeviceLost, "gone"))));
  assert.deepEqual([error.kind, error.message, error.name], [ErrorKind.DeviceLost, "gone", ErrorKind.DeviceLost]);
});

test("a template renders the generation prompt, and its raise_exception is a ChatTemplateRefusedError", () => {
  const source = "{% for m in messages %}{% if m.role == 'assistant' and loop.first %}" +
    "{{ raise_exception('the user speaks first') }}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}" +
    "{% if add_generation_prompt %}<assistant>{% endif %}";
  const template = new ChatTemplate(Template, source);
  assert.equal(template.render([{ role: "user", content: "hi" }]), "<user>hi<assistant>");
  assert.throws(() => template.render([{ role: "assistant", content: "hi" }]), (error) =>
    error.kind === ErrorKind.TemplateRefused &&
    error.message === "the chat template refused the messages: the user speaks first: send the conversation in an " +
                      "order this model takes");
});

test("the CPU build is refused before download where it cannot run, with a typed error", async () => {
  const { checkCpu, cpuError, hasWasmSimd } = await import("../../webapp/client/lib/engine/wasm_cpu.js");
  assert.ok(hasWasmSimd());  // node has wasm SIMD: the probe module validates
  const model = { id: "M-q4f32_1", cpu: { file: "wasm_cpu", memory_bytes: 600e6 } };
  assert.doesNotThrow(() => checkCpu(model));
  assert.throws(() => checkCpu({ id: "M-q4f16_1" }), (e) => e.kind === ErrorKind.NoCpuBuild);
  assert.throws(() => checkCpu({ ...model, cpu: { ...model.cpu, memory_bytes: 5 * 1024 ** 3 } }),
                (e) => e.kind === ErrorKind.OutOfMemory && /4 GB/.test(e.message));
  // A heap that cannot grow: what a wasm allocation past the ceiling throws.
  assert.equal(cpuError(new RangeError("WebAssembly.Memory.grow(): Maximum memory size exceeded")).kind, ErrorKind.OutOfMemory);
  assert.equal(cpuError(new Error("unreachable")).kind, ErrorKind.CPUExecution);
  assert.ok(!REQUEST_ERRORS.has(ErrorKind.OutOfMemory) && !REQUEST_ERRORS.has(ErrorKind.NoWasmSimd));
});

// Which engine errors are the request's (the user sees them; no handover) and the chat template's refusal.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Template } from "../../webapp/node_modules/@huggingface/jinja/dist/index.js";
import { ChatTemplate } from "../../webapp/static/js/engine/chat_template.js";
import { EngineError, ErrorKind, REQUEST_ERRORS } from "../../webapp/static/js/engine/errors.js";

test("request errors are told apart from failures of the browser", () => {
  for (const kind of [ErrorKind.ContextWindow, ErrorKind.InvalidSchema, ErrorKind.InvalidRequest])
    assert.ok(REQUEST_ERRORS.has(kind), kind);
  for (const kind of [ErrorKind.DeviceLost, ErrorKind.GPUExecution, ErrorKind.Shader, ErrorKind.Restarted])
    assert.ok(!REQUEST_ERRORS.has(kind), kind);
});

test("an engine error keeps its kind across the worker boundary", () => {
  const error = EngineError.fromJSON(JSON.parse(JSON.stringify(new EngineError(ErrorKind.DeviceLost, "gone"))));
  assert.deepEqual([error.kind, error.message, error.name], [ErrorKind.DeviceLost, "gone", ErrorKind.DeviceLost]);
});

test("a template renders the generation prompt, and its raise_exception is an InvalidRequestError", () => {
  const source = "{% for m in messages %}{% if m.role == 'assistant' and loop.first %}" +
    "{{ raise_exception('the user speaks first') }}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}" +
    "{% if add_generation_prompt %}<assistant>{% endif %}";
  const template = new ChatTemplate(Template, source);
  assert.equal(template.render([{ role: "user", content: "hi" }]), "<user>hi<assistant>");
  assert.throws(() => template.render([{ role: "assistant", content: "hi" }]), (error) =>
    error.kind === ErrorKind.InvalidRequest &&
    error.message === "the chat template refused the messages: the user speaks first: send the conversation in an " +
                      "order this model takes");
});

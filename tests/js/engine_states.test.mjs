// The browser engine's lifecycle (webapp/client/lib/engine_states.js): every transition it allows and
// refuses, and the keys it is kept under.
import assert from "node:assert/strict";
import { test } from "node:test";

import { EngineStates, State, engineKey, isLoading, parseKey } from "../../webapp/client/lib/engine_states.js";

const v1 = { id: "m-q4f32_1", version: "1111" };

test("a model goes none, downloading, loading, checking, ready, and every step is heard", () => {
  const heard = [];
  const states = new EngineStates((entry) => heard.push(entry.state));
  const key = engineKey(v1, "software");
  assert.equal(states.get(key).state, State.None);
  for (const step of [State.Downloading, State.Loading, State.Checking, State.Ready]) states.move(key, step);
  assert.deepEqual(heard, ["downloading", "loading", "checking", "ready"]);
  assert.equal(states.move(key, State.Retired).state, State.Retired);
});

test("keys name the model version and its backend: the kernel sets of WebGPU share one", () => {
  assert.equal(engineKey(v1, "cpu"), "m-q4f32_1@1111@cpu");
  assert.equal(engineKey(v1, "software"), engineKey(v1, "gpu"));
  assert.equal(engineKey(v1, undefined), "m-q4f32_1@1111@webgpu");
  assert.notEqual(engineKey(v1, "cpu"), engineKey({ ...v1, version: "2222" }, "cpu"));
  assert.deepEqual(parseKey("m-q4f32_1@1111@cpu"), { id: "m-q4f32_1", version: "1111", backend: "cpu" });
});

test("any step before ready, and ready itself, may fail with its reason; failed and retired are final", () => {
  for (const upTo of [State.Downloading, State.Loading, State.Checking, State.Ready]) {
    const states = new EngineStates();
    const key = engineKey(v1, "cpu");
    for (const step of [State.Downloading, State.Loading, State.Checking, State.Ready]) {
      states.move(key, step);
      if (step === upTo) break;
    }
    const failed = states.move(key, State.Failed, { reason: "the GPU was lost" });
    assert.equal(failed.reason, "the GPU was lost");
    assert.throws(() => states.move(key, State.Downloading), /no transition from failed to downloading/);
  }
  const states = new EngineStates();
  const key = engineKey(v1, "cpu");
  for (const step of [State.Downloading, State.Loading, State.Checking, State.Ready, State.Retired]) states.move(key, step);
  assert.throws(() => states.move(key, State.Ready), /from retired to ready/);
});

test("a step out of order is refused and changes nothing", () => {
  const states = new EngineStates();
  const key = engineKey(v1, "cpu");
  assert.throws(() => states.move(key, State.Ready), /no transition from none to ready/);
  assert.throws(() => states.move(key, State.Failed), /no transition from none to failed/);
  states.move(key, State.Downloading);
  assert.throws(() => states.move(key, State.Checking), /from downloading to checking/);
  assert.equal(states.get(key).state, State.Downloading);
  assert.ok(isLoading(states.get(key).state));
});

test("the versions in use (loading or ready) are those the cache must keep", () => {
  const states = new EngineStates();
  const old = engineKey(v1, "cpu"), next = engineKey({ ...v1, version: "2222" }, "cpu");
  for (const step of [State.Downloading, State.Loading, State.Checking, State.Ready]) states.move(old, step);
  states.move(next, State.Downloading);
  assert.deepEqual(states.versionsInUse(v1.id).sort(), ["1111", "2222"]);
  for (const step of [State.Loading, State.Checking, State.Ready]) states.move(next, step);
  states.move(old, State.Retired);
  assert.deepEqual(states.versionsInUse(v1.id), ["2222"]);
  assert.deepEqual(states.versionsInUse("another-model"), []);
});

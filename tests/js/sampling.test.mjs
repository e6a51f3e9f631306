// The browser engine's sampling and request checks (webapp/client/lib/engine/sampling.js), with no browser:
// `node --test tests/js` (make test runs it). That they equal the server's Python is tests/router/test_sampling.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { EngineError, ErrorKind } from "../../webapp/client/lib/engine/errors.js";
import { SEED_MAX, firstStop, heldBack, parseSampling, sample, uniforms } from "../../webapp/client/lib/engine/sampling.js";

const LOGITS = Float32Array.from([0, 3, 2.9, -1, 1]);
const LIMITS = { default_max_tokens: 256, max_tokens_limit: 2048 };
const draws = (options, positions) => positions.map((p) => sample(LOGITS, options, p));
const range = (n) => Array.from({ length: n }, (_, i) => i);

test("temperature 0 is greedy, whatever the seed", () => {
  assert.deepEqual(new Set(draws({ temperature: 0, top_p: 1, seed: 5 }, range(30))), new Set([1]));
});

test("top_p keeps only the nucleus", () => {
  // Token 1 alone holds under half of the mass; tokens 1 and 2 together hold more.
  assert.deepEqual(new Set(draws({ temperature: 1, top_p: 0.5, seed: 3 }, range(200))), new Set([1, 2]));
});

test("a draw depends only on the seed and the position", () => {
  const options = { temperature: 1.5, top_p: 1, seed: 7 };
  const whole = draws(options, range(40));
  assert.deepEqual(draws(options, range(40)), whole);
  assert.ok(new Set(whole).size > 2);
  // An answer continued elsewhere from position 25 draws what the first path would have.
  assert.deepEqual(draws(options, range(15).map((i) => 25 + i)), whole.slice(25));
  assert.notDeepEqual(draws({ ...options, seed: 8 }, range(40)), whole);
});

test("masked tokens are never drawn", () => {
  const masked = Float32Array.from([-Infinity, 3, -Infinity, -Infinity, 1]);
  const tokens = range(300).map((p) => sample(masked, { temperature: 2, top_p: 1, seed: 1 }, p));
  assert.deepEqual(new Set(tokens), new Set([1, 4]));
});

test("the noise is uniform in (0, 1)", () => {
  const bins = new Array(10).fill(0);
  for (let p = 0; p < 10; p++) for (const u of uniforms(99, p, 1000)) bins[Math.floor(u * 10)]++;
  assert.ok(Math.min(...bins) > 880 && Math.max(...bins) < 1120, bins.join(" "));
  for (const u of [...uniforms(SEED_MAX, 0, 100), ...uniforms(0, 0, 100)]) assert.ok(u > 0 && u < 1);
});

test("stop strings: the first one found, and the tail held back", () => {
  assert.equal(firstStop("Hello world", ["wor", "xyz"]), 6);
  assert.equal(firstStop("Hello", ["xyz"]), null);
  assert.equal(heldBack("The capital is Pa", ["Paris"]), 2);
  assert.equal(heldBack("The capital is P", ["Paris", "Q"]), 1);
  assert.equal(heldBack("The capital is", ["Paris"]), 0);
});

test("request defaults come from the server's limits; no seed means a fresh one", () => {
  const read = parseSampling({}, LIMITS);
  assert.equal(read.max_tokens, 256);
  assert.deepEqual([read.temperature, read.top_p, read.seed_position, read.stop], [1, 1, 0, []]);
  assert.ok(Number.isInteger(read.seed) && read.seed >= 0 && read.seed <= SEED_MAX);
  assert.notEqual(parseSampling({}, LIMITS).seed, parseSampling({}, LIMITS).seed);
});

test("bad fields are InvalidRequestErrors that name the field", () => {
  for (const [options, words] of [[{ seed: -1 }, "seed must be an integer from 0 to 4294967295"],
                                  [{ seed: SEED_MAX + 1 }, "seed must be"], [{ stop: 3 }, "stop must be"],
                                  [{ stop: ["a", "b", "c", "d", "e"] }, "at most 4 strings"],
                                  [{ max_tokens: 4096 }, "max_tokens must be an integer from 1 to 2048"],
                                  [{ top_p: 0 }, "top_p must be greater than 0"]]) {
    assert.throws(() => parseSampling(options, LIMITS), (error) => error instanceof EngineError &&
      error.kind === ErrorKind.InvalidRequest && error.message.includes(words), JSON.stringify(options));
  }
});

// How a token is chosen and where an answer stops: the procedure specified in router/sampling.py, which the
// server's engine runs, written again here step for step (tests/router/test_sampling.py runs both on the
// same inputs). So a seed gives the same answer on either path, and an answer handed over mid-way goes on
// drawing where it left off.
import { EngineError, ErrorKind } from "./errors.js";

export const SEED_MAX = 2 ** 32 - 1;
const MAX_STOPS = 4;

// The request's sampling options, checked as the server checks them (same limits, same words); `limits`
// are the server's (page config `engine.request`). Throws InvalidRequestError naming the field.
export function parseSampling(options, { default_max_tokens, max_tokens_limit }) {
  const refuse = (message) => { throw new EngineError(ErrorKind.InvalidRequest, message); };
  const given = (value) => value !== undefined && value !== null;
  const integer = (name, value, low, high) => {
    if (!Number.isInteger(value) || value < low || value > high) refuse(`${name} must be an integer from ${low} to ${high}`);
    return value;
  };
  const number = (name, value, low, high) => {
    if (typeof value !== "number" || !(value >= low && value <= high)) refuse(`${name} must be a number from ${low} to ${high}`);
    return value;
  };
  const maxTokens = options.max_completion_tokens ?? options.max_tokens ?? default_max_tokens;
  const sampling = { max_tokens: integer("max_tokens", maxTokens, 1, max_tokens_limit) };
  sampling.temperature = given(options.temperature) ? number("temperature", options.temperature, 0, 2) : 1;
  sampling.top_p = given(options.top_p) ? number("top_p", options.top_p, 0, 1) : 1;
  if (sampling.top_p === 0) refuse("top_p must be greater than 0");
  sampling.seed = given(options.seed) ? integer("seed", options.seed, 0, SEED_MAX) : randomSeed();
  sampling.seed_position = given(options.seed_position)
    ? integer("seed_position", options.seed_position, 0, max_tokens_limit) : 0;
  sampling.stop = parseStop(options.stop, refuse);
  return sampling;
}

function parseStop(stop, refuse) {
  if (stop === undefined || stop === null || stop === "") return [];
  const stops = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(stops) || stops.length > MAX_STOPS || !stops.every((s) => typeof s === "string"))
    refuse(`stop must be a string or a list of at most ${MAX_STOPS} strings`);
  return stops;
}

export const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];

const GOLDEN = 0x6d2b79f5;

// mulberry32's output function, on a uint32.
function mix(t) {
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

// u_0 .. u_{count-1} for one position of one seed's stream, in (0, 1).
export function uniforms(seed, position, count) {
  const key = mix((seed + Math.imul(position + 1, GOLDEN)) >>> 0);
  return Float64Array.from({ length: count }, (_, i) => (mix((key + Math.imul(i + 1, GOLDEN)) >>> 0) + 0.5) / 4294967296);
}

export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

// The token at `position` of an answer: router/sampling.py's steps 1-5.
export function sample(logits, { temperature, top_p, seed }, position) {
  if (temperature <= 0) return argmax(logits);
  const max = logits[argmax(logits)];
  const scores = Float64Array.from(logits, (logit) => (logit - max) / temperature);
  if (top_p < 1) {
    const weights = scores.map(Math.exp);
    const byWeight = Uint32Array.from(weights.keys()).sort((a, b) => (weights[b] - weights[a]) || (a - b));
    const target = top_p * weights.reduce((sum, w) => sum + w, 0);
    let running = 0, count = 0;
    while (count < byWeight.length) { running += weights[byWeight[count++]]; if (running >= target) break; }
    for (const i of byWeight.subarray(count)) scores[i] = -Infinity;
  }
  const u = uniforms(seed, position, scores.length);
  let best = 0, bestScore = -Infinity;
  for (let i = 0; i < scores.length; i++) {
    const noisy = scores[i] - Math.log(-Math.log(u[i]));
    if (noisy > bestScore) { best = i; bestScore = noisy; }
  }
  return best;
}

// Where the first stop string in `text` begins, or null.
export function firstStop(text, stops) {
  const hits = stops.filter((s) => s && text.includes(s)).map((s) => text.indexOf(s));
  return hits.length ? Math.min(...hits) : null;
}

// The length of the longest tail of `text` that is the start of a stop string.
export function heldBack(text, stops) {
  let longest = 0;
  for (const stop of stops)
    for (let n = Math.min(stop.length - 1, text.length); n > longest; n--)
      if (stop.startsWith(text.slice(text.length - n))) { longest = n; break; }
  return longest;
}

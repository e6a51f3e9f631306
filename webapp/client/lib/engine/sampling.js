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
  let best = 0, top = logits[0];
  for (let i = 1; i < logits.length; i++) if (logits[i] > top) { best = i; top = logits[i]; }
  return best;
}

// Reused from token to token (one vocabulary's worth each): a step allocates nothing.
const scratch = { size: 0 };
function buffers(n) {
  if (scratch.size !== n)
    Object.assign(scratch, { size: n, scores: new Float64Array(n), weights: new Float64Array(n), ids: new Uint32Array(n),
                             values: new Float64Array(n), octaves: new Float64Array(OCTAVES) });
  return scratch;
}

// The weight below which the nucleus is looked for first, and how much lower each next try goes.
const FIRST_FLOOR = 2 ** -10, FLOOR_STEP = 2 ** -16;
// Gumbel noise -log(-log(u)) lies in [-3.14, 22.88] for the u of step 4, so a token whose score is more
// than 26.1 under the top token's (0) can never have the highest noisy score: it gets no noise.
const OUT_OF_REACH = -26.1;

// The token at `position` of an answer: router/sampling.py's steps 1-5, in the same float64 operations,
// without sorting the whole vocabulary and with noise drawn only where it can matter.
export function sample(logits, { temperature, top_p, seed }, position) {
  if (temperature <= 0) return argmax(logits);
  const n = logits.length;
  const { scores } = buffers(n);
  const max = logits[argmax(logits)];
  if (top_p >= 1) {
    for (let i = 0; i < n; i++) scores[i] = (logits[i] - max) / temperature;
    return gumbelMax(scores, null, n, seed, position);
  }
  const [ids, count] = roughNucleus(logits, max, temperature, top_p) ?? exactNucleus(logits, max, temperature, top_p);
  return gumbelMax(scores, ids, count, seed, position);
}

// Step 3: the nucleus's ids and how many, with the scores (step 2) of at least those tokens. The cut needs
// the whole vocabulary's total weight, a float64 sum of 49k exponentials in index order: first a rough
// total (an exponential cheaper than Math.exp, within a stated error) tells where the cut is
// (roughNucleus), and the exact total is summed (exactNucleus) only when the cut lies so close to the rough
// target that the exact one could move it. The heaviest tokens are sorted only down to a weight floor:
// every token under it weighs less than every token over it, so the walk over the sorted tokens over the
// floor is the walk over the whole vocabulary sorted, as long as it reaches the target there; when it
// does not, the floor goes lower (at 0, every token is sorted).
function exactNucleus(logits, max, temperature, top_p) {
  const n = logits.length;
  const { scores, weights, ids } = buffers(n);
  let total = 0, count = 0;
  for (let i = 0; i < n; i++) {
    const score = (logits[i] - max) / temperature, weight = Math.exp(score);
    scores[i] = score;
    weights[i] = weight;
    total += weight;
    if (weight >= FIRST_FLOOR) ids[count++] = i;
  }
  const target = top_p * total;
  for (let floor = FIRST_FLOOR; ;) {
    const heaviest = ids.subarray(0, count).sort((a, b) => (weights[b] - weights[a]) || (a - b));
    let running = 0;
    for (let k = 0; k < count; k++) {
      running += weights[heaviest[k]];
      if (running >= target) return [heaviest, k + 1];
    }
    if (floor === 0) return [heaviest, count];
    floor = floor < 1e-300 ? 0 : floor * FLOOR_STEP;
    count = 0;
    for (let i = 0; i < n; i++) if (weights[i] >= floor) ids[count++] = i;
  }
}

// The rough weight: e^score = 2^y for y = score * log2(e) <= 0, y = k + f with k an integer and |f| <= 1/2,
// 2^k from a table and 2^f = e^(f ln 2) by its Taylor series to degree 6 (|f ln 2| <= 0.347: the
// remainder is under 0.347^7 / 7! * e^0.347 = 1.7e-7 of a value of at least e^-0.347), so within a
// relative 3e-7 with the rounding (y itself is computed with a multiplication: off by under 1e-12). Two
// float64 sums of n terms in index order differ from their exact values by under n * 2^-53 of the total
// each; terms that underflow (under 2^-1022) are lost in that, as the total is at least 1 (the top token's).
const HALVINGS = Float64Array.from({ length: 1076 }, (_, k) => 2 ** -k);  // 2^-k, exact (2^-1075 is 0)
const ROUNDING = 1.5 * 2 ** 52;  // (y + ROUNDING) - ROUNDING is y rounded to an integer, for |y| < 2^51
const roughSlack = (n) => 1e-6 + 2 * n * 2 ** -53;
const OCTAVES = 64;  // the rough weights' histogram: octave b holds the weights nearest 2^-b (by exponent)
const NEAR = -24;  // the rough pass gathers the tokens of weight over 2^-24, where the floor usually is

// exactNucleus's result when a rough total decides it, else null. The rough pass also makes a histogram of
// the rough weights by octave, from which the floor is the lowest octave whose tokens, with all heavier
// ones, surely weigh more than the target. Over it, the exact weights' values are sorted (natively: the
// walk's running sums depend on the values only) and walked to the first that reaches every target the
// exact total may give (the first reaching the lowest reaches the highest too). The nucleus is then every
// token heavier than the cut's weight and, of those of exactly its weight, the lowest ids (the order a
// sort by weight, then id, puts them in).
function roughNucleus(logits, max, temperature, top_p) {
  const n = logits.length;
  const { scores, weights, ids, octaves, values } = buffers(n);
  const toExponent = Math.LOG2E / temperature;
  octaves.fill(0);
  let rough = 0, near = 0;  // near: how many tokens of exponent over NEAR, gathered in ids
  for (let i = 0; i < n; i++) {
    const y = (logits[i] - max) * toExponent;
    if (!(y > -1075)) continue;  // (a weight that underflows to 0)
    const k = (y + ROUNDING) - ROUNDING, f = (y - k) * Math.LN2;
    const weight = (1 + f * (1 + f * (1 / 2 + f * (1 / 6 + f * (1 / 24 + f * (1 / 120 + f / 720)))))) * HALVINGS[-k | 0];
    rough += weight;
    octaves[Math.min(OCTAVES - 1, -k | 0)] += weight;
    if (y >= NEAR) ids[near++] = i;
  }
  const slack = rough * roughSlack(n);
  const lowest = top_p * (rough - slack), highest = top_p * (rough + slack);
  let octave = 0;
  for (let heavier = octaves[0]; heavier < highest + slack && octave < OCTAVES - 1;) heavier += octaves[++octave];
  // Exact scores and weights for the tokens that may weigh over the floor (those gathered, unless the floor
  // is lower still); the floor itself an exact weight, so the tokens under it (exponents at least 1e-3
  // lower, or weighing less) weigh less than every token over it.
  const lowestExponent = -(octave + 0.5), floor = Math.exp(lowestExponent / Math.LOG2E);
  const gathered = lowestExponent - 1e-3 >= NEAR;
  let count = 0;
  for (let k = 0, end = gathered ? near : n; k < end; k++) {
    const i = gathered ? ids[k] : k;
    if (!((logits[i] - max) * toExponent >= lowestExponent - 1e-3)) continue;
    const score = (logits[i] - max) / temperature, weight = Math.exp(score);
    if (weight < floor) continue;
    scores[i] = score;
    weights[i] = weight;
    values[count] = weight;
    ids[count++] = i;  // (never ahead of k: ids is read and rewritten in the same order)
  }
  const sorted = values.subarray(0, count).sort();  // ascending: the walk goes from the end
  let running = 0, cut = -1;
  for (let k = count - 1; k >= 0 && cut < 0; k--) {
    running += sorted[k];
    if (running >= lowest) cut = k;
  }
  if (cut < 0 || running < highest) return null;
  const threshold = sorted[cut];
  let heavier = cut + 1;
  while (heavier < count && sorted[heavier] === threshold) heavier++;
  let ties = heavier - cut;  // the nucleus's tokens of exactly the cut's weight
  let size = 0;
  for (let k = 0; k < count; k++) {
    const i = ids[k], weight = weights[i];
    if (weight > threshold || (weight === threshold && ties-- > 0)) ids[size++] = i;
  }
  return [ids, size];
}

// Steps 4 and 5 over the nucleus (`ids`, or every token): the highest score plus Gumbel noise, the lowest
// id on a tie.
function gumbelMax(scores, ids, count, seed, position) {
  const key = mix((seed + Math.imul(position + 1, GOLDEN)) >>> 0);
  let best = -1, bestScore = -Infinity;
  for (let k = 0; k < count; k++) {
    const i = ids ? ids[k] : k;
    if (!(scores[i] >= OUT_OF_REACH)) continue;
    const u = (mix((key + Math.imul(i + 1, GOLDEN)) >>> 0) + 0.5) / 4294967296;
    const noisy = scores[i] - Math.log(-Math.log(u));
    if (noisy > bestScore || (noisy === bestScore && i < best)) { best = i; bestScore = noisy; }
  }
  return best;
}

// An answer's text as its tokens arrive, decoded a few tokens at a time: `decode(ids)` turns a window of
// tokens into text, and the text of the whole answer is the text of its windows one after another
// (router/sampling.py's Detokenizer, step for step). `text` holds only whole characters; `pending` the
// decoded tail that may still become one (ending in U+FFFD).
export class Detokenizer {
  constructor(decode) {
    Object.assign(this, { decode, ids: [], prefix: 0, read: 0, text: "", pending: "" });
  }

  push(id) {
    this.ids.push(id);
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const after = this.decode(this.ids.slice(this.prefix));
    this.pending = after.slice(before.length);
    if (after.length > before.length && !after.endsWith("\ufffd")) {
      this.text += this.pending;
      this.pending = "";
      this.prefix = this.read;
      this.read = this.ids.length;
    }
    return this.text;
  }
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

// What an answer shows as its tokens arrive: whole UTF-8 characters only, nothing that may still begin a stop
// string, and the text cut where a stop string begins. `push(token)` gives the piece that became final
// ({text, ids}: the token ids drawn since the previous piece) or null; `tail()`, at the end, what was held back
// and the ids not yet sent. router/sampling.py's StreamedText, piece for piece
// (tests/router/test_streamed_text.py runs both on the same token streams).
export class StreamedText {
  constructor(decode, stops) {
    Object.assign(this, { detokenizer: new Detokenizer(decode), stops, text: "", shown: "", tokens: [], sent: 0,
                          stopped: false });
  }

  push(token) {
    this.tokens.push(token);
    let text = this.detokenizer.push(token) + this.detokenizer.pending;  // the whole answer, a window at a time
    const stopAt = firstStop(text, this.stops);
    if (stopAt !== null) { text = text.slice(0, stopAt); this.stopped = true; }
    this.text = text;
    const ready = this.stopped ? text : text.slice(0, text.length - heldBack(text, this.stops));
    if (ready.endsWith("\ufffd") || ready.length <= this.shown.length) return null;
    return this.piece(ready);
  }

  tail() {
    if (this.text.length <= this.shown.length && this.sent === this.tokens.length) return null;
    return this.piece(this.text.replace(/\ufffd+$/, ""));
  }

  piece(upto) {
    const piece = { text: upto.slice(this.shown.length), ids: this.tokens.slice(this.sent) };
    if (upto.length > this.shown.length) this.shown = upto;
    this.sent = this.tokens.length;
    return piece;
  }
}

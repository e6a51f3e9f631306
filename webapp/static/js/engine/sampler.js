// Token sampling on the CPU side of the worker: greedy at temperature 0, otherwise temperature and
// top-p over a softmax, drawn from a seeded generator so a seed repeats the same answer.

// mulberry32: a small, well-distributed 32-bit generator; seeded, or from crypto when no seed is given.
export function makeRandom(seed) {
  let state = (seed ?? crypto.getRandomValues(new Uint32Array(1))[0]) >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

export function sample(logits, { temperature = 1, top_p = 1 }, random) {
  if (temperature <= 0) return argmax(logits);
  const max = logits[argmax(logits)];
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) { probs[i] = Math.exp((logits[i] - max) / temperature); sum += probs[i]; }
  const order = Array.from(probs.keys()).filter((i) => probs[i] / sum > 1e-9).sort((a, b) => probs[b] - probs[a]);
  const kept = [];
  let mass = 0;
  for (const i of order) { kept.push(i); mass += probs[i] / sum; if (mass >= top_p) break; }
  let r = random() * kept.reduce((s, i) => s + probs[i], 0);
  for (const i of kept) { r -= probs[i]; if (r <= 0) return i; }
  return kept[kept.length - 1];
}

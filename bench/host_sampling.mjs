// node bench/host_sampling.mjs LOGITS_F32 VOCAB DRAWS SAMPLING_JSON: the browser engine's sampler
// (webapp/client/lib/engine/sampling.js) over the given logits, warmed up first; prints {ms_per_token}.
import { readFileSync } from "node:fs";

import { sample } from "../webapp/client/lib/engine/sampling.js";

const [path, vocab, draws, options] = process.argv.slice(2);
const bytes = readFileSync(path);
const all = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
const rows = Array.from({ length: all.length / Number(vocab) }, (_, r) => all.subarray(r * vocab, (r + 1) * vocab));
const sampling = { ...JSON.parse(options), seed: 7 };
const run = (n) => { for (let p = 0; p < n; p++) sample(rows[p % rows.length], sampling, p); };
run(Number(draws));  // the JIT's warm-up
const started = performance.now();
run(Number(draws));
console.log(JSON.stringify({ ms_per_token: (performance.now() - started) / Number(draws) }));

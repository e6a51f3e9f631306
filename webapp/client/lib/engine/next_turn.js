// When an answer may go on from a kept conversation's KV cache (router/engine.py's reusable, the same rule;
// tests/router/test_conversation_cache.py runs both on the same prompts): only when the prompt is the next
// turn of that conversation, beginning with the whole prompt it last answered (`asked` tokens) and going on;
// then the cache keeps the tokens the prompt repeats, leaving at least one to prefill, whose logits start the
// answer. Otherwise null: a new conversation's answer never depends on what was asked before.
export function reusable(held, asked, prompt) {
  if (prompt.length > asked && commonPrefix(held, prompt, asked) === asked) return commonPrefix(held, prompt, prompt.length - 1);
  return null;
}

// How many tokens `a` and `b` begin with in common, counting at most `limit`.
export function commonPrefix(a, b, limit) {
  let n = 0;
  while (n < Math.min(a.length, b.length, limit) && a[n] === b[n]) n++;
  return n;
}

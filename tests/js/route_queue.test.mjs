// Routing requests one at a time, the latest decision winning (webapp/client/lib/route_queue.js), with a
// router whose replies the test releases in any order it likes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { RouteQueue } from "../../webapp/client/lib/route_queue.js";

// A router stand-in: each ask waits until the test answers it.
function router() {
  const asks = [];
  let inFlight = 0, most = 0;
  const ask = (numbers) => new Promise((resolve, reject) => {
    most = Math.max(most, ++inFlight);
    asks.push({ numbers, answer: (decision) => { inFlight--; resolve(decision); }, fail: (e) => { inFlight--; reject(e); } });
  });
  return { ask, asks, most: () => most };
}
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

test("at most one request is in flight; the next is asked when the reply came", async () => {
  const r = router();
  const kept = [];
  const queue = new RouteQueue(r.ask, (d) => kept.push(d));
  const first = queue.request({ promptTokens: 10 });
  const second = queue.request({ promptTokens: 20 });
  await settle();
  assert.equal(r.asks.length, 1);
  r.asks[0].answer("A");
  assert.equal(await first, "A");
  await settle();
  assert.equal(r.asks.length, 2);
  assert.deepEqual(r.asks[1].numbers, { promptTokens: 20 });
  r.asks[1].answer("B");
  assert.equal(await second, "B");
  assert.deepEqual(kept, ["A", "B"]);
  assert.equal(queue.latest, "B");
  assert.equal(r.most(), 1);
});

test("an older reply never replaces a newer decision", async () => {
  const r = router();
  const queue = new RouteQueue(r.ask);
  const older = queue.request();
  const newer = queue.request({ promptTokens: 5 });
  await settle();
  r.asks[0].answer("old");
  await older;
  await settle();
  r.asks[1].answer("new");
  await newer;
  assert.equal(queue.latest, "new");
  // A reply for an entry older than the one kept is not kept (the order the queue asks in guarantees it;
  // the sequence check makes it hold whatever the transport does).
  queue.keptSeq = 99;
  const late = queue.request();
  await settle();
  r.asks[2].answer("late");
  assert.equal(await late, "late");
  assert.equal(queue.latest, "new");
});

test("requests without numbers that wait together are asked once; an answer's numbers are never dropped", async () => {
  const r = router();
  const queue = new RouteQueue(r.ask);
  const busy = queue.request();
  const refreshes = [queue.request(), queue.request(), queue.request()];
  const answer = queue.request({ promptTokens: 42 });  // joins the waiting refreshes, with its numbers
  const answer2 = queue.request({ promptTokens: 43 });  // another answer: asked on its own
  const after = queue.request();                         // joins the last answer's request
  await settle();
  r.asks[0].answer("first");
  await busy;
  await settle();
  assert.deepEqual(r.asks.map((a) => a.numbers), [null, { promptTokens: 42 }]);
  r.asks[1].answer("for 42");
  assert.deepEqual(await Promise.all([...refreshes, answer]), ["for 42", "for 42", "for 42", "for 42"]);
  await settle();
  assert.deepEqual(r.asks[2].numbers, { promptTokens: 43 });
  r.asks[2].answer("for 43");
  assert.deepEqual(await Promise.all([answer2, after]), ["for 43", "for 43"]);
  assert.equal(r.asks.length, 3);
});

test("a failed request rejects its callers, keeps the last decision, and the queue goes on", async () => {
  const r = router();
  const queue = new RouteQueue(r.ask);
  const ok = queue.request();
  await settle();
  r.asks[0].answer("kept");
  await ok;
  const failing = queue.request({ promptTokens: 1 });
  const next = queue.request({ promptTokens: 2 });
  await settle();
  r.asks[1].fail(new Error("router down"));
  await assert.rejects(failing, /router down/);
  assert.equal(queue.latest, "kept");
  await settle();
  r.asks[2].answer("back");
  assert.equal(await next, "back");
  assert.equal(queue.latest, "back");
});

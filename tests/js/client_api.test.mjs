// The client package's public surface (webapp/client): what index.js exports is what index.d.ts declares,
// the error kinds agree, and what can be checked without a browser is (options, event names).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as client from "../../webapp/client/index.js";
import { Events } from "../../webapp/client/lib/events.js";

const declarations = readFileSync(new URL("../../webapp/client/index.d.ts", import.meta.url), "utf8");

test("index.js exports what index.d.ts declares", () => {
  const declared = [...declarations.matchAll(/^export declare (?:class|const) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(Object.keys(client).sort(), declared);
});

test("the error kinds of index.d.ts are the client's", () => {
  const block = declarations.slice(declarations.indexOf("export declare const ErrorKind"));
  const declared = Object.fromEntries([...block.slice(0, block.indexOf("};")).matchAll(/readonly (\w+): "(\w+)"/g)]
    .map((m) => [m[1], m[2]]));
  assert.deepEqual(declared, { ...client.ErrorKind });
  const names = declarations.match(/export type ErrorKindName =([^;]*);/)[1].match(/"\w+"/g).map((n) => JSON.parse(n));
  assert.deepEqual(names.sort(), Object.values(client.ErrorKind).sort());
});

test("Seam.connect checks its options before anything else, naming the option", async () => {
  const refused = (options) => client.Seam.connect(options).then(() => null, (e) => e);
  const unknown = await refused({ server: "http://127.0.0.1:1/", preferences: "auto" });
  assert.equal(unknown.kind, "InvalidOptionError");
  assert.match(unknown.message, /no option "preferences"; its options are server, model, preference/);
  assert.match((await refused({ server: "http://127.0.0.1:1/", preference: "sometimes" })).message,
               /option preference must be one of auto, fastest, local_only, cloud_only, not "sometimes"/);
  assert.match((await refused({ server: "http://127.0.0.1:1/", prefetch: "yes" })).message, /option prefetch must be a boolean/);
  assert.match((await refused({ server: "ftp://seam.example.com/" })).message, /option server must be the Seam server's URL/);
  assert.match((await refused("http://seam.example.com/")).message, /Seam.connect takes an object of options/);
  assert.ok((await refused({ server: "ftp://x" })) instanceof client.SeamError);
});

test("events are named: a listener for no event is refused, a throwing listener does not stop the others", () => {
  const events = new Events(["decision", "update"]);
  assert.throws(() => events.on("decisions", () => {}), /no event "decisions": the events are decision, update/);
  const heard = [];
  const original = console.error;
  console.error = () => {};
  try {
    events.on("update", () => { throw new Error("a broken UI"); });
    const off = events.on("update", (u) => heard.push(u));
    events.emit("update", 1);
    off();
    events.emit("update", 2);
  } finally {
    console.error = original;
  }
  assert.deepEqual(heard, [1]);
});

test("an answer that may call tools is constrained, and its calls are put together from their pieces", async () => {
  const { mayCallTools } = await import("../../webapp/client/lib/answers.js");
  const { complete } = await import("../../webapp/client/lib/engine/completion.js");
  const user = [{ role: "user", content: "Weather?" }];
  const tool = { type: "function", function: { name: "get_weather" } };
  assert.equal(mayCallTools({ messages: user, tools: [tool] }), true);
  assert.equal(mayCallTools({ messages: user, tools: [tool], tool_choice: "none" }), false);
  assert.equal(mayCallTools({ messages: user, tools: [] }), false);
  assert.equal(mayCallTools({ messages: [...user, { role: "tool", tool_call_id: "c", content: "sunny" }] }), false);
  const chunk = (delta, finish = null) => ({ id: "x", created: 0, model: "m", choices: [{ index: 0, delta, finish_reason: finish }] });
  const pieces = [chunk({ role: "assistant", content: "" }),
    chunk({ content: "", tool_calls: [{ index: 0, id: "call_a", type: "function", function: { name: "get_weather", arguments: "" } }] }),
    chunk({ content: "", tool_calls: [{ index: 0, function: { arguments: '{"city": ' } }] }),
    chunk({ content: "", tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
    chunk({ content: "", tool_calls: [{ index: 1, id: "call_b", type: "function", function: { name: "get_time", arguments: "{}" } }] }),
    { ...chunk({}, "tool_calls"), usage: null, seam: {} }];
  const whole = await complete((async function* () { yield* pieces; })());
  assert.deepEqual(whole.choices[0], { index: 0, finish_reason: "tool_calls", message: { role: "assistant", content: null,
    tool_calls: [{ id: "call_a", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } },
                 { id: "call_b", type: "function", function: { name: "get_time", arguments: "{}" } }] } });
});

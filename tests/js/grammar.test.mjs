// The browser's schema checks before web-xgrammar compiles (webapp/client/lib/engine/grammar.js). The
// rules are the server's shape (page config engine.grammar); that the words equal the server's is
// tests/router/test_structured_output.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ErrorKind } from "../../webapp/client/lib/engine/errors.js";
import { parseResponseFormat } from "../../webapp/client/lib/engine/grammar.js";

const RULES = { json_style: { any_whitespace: false, separators: [", ", ": "] }, unsupported_keywords: ["uniqueItems", "not", "multipleOf"],
                limits: { max_chars: 2000, max_depth: 8, max_literal_chars: 50, max_literals_chars: 120 } };
const format = (schema) => ({ type: "json_schema", json_schema: { name: "x", schema } });
const refused = (schema, words) => assert.throws(() => parseResponseFormat(format(schema), RULES),
  (error) => error.kind === ErrorKind.InvalidSchema && error.message.includes(words), words);

test("text and json_object", () => {
  assert.equal(parseResponseFormat(undefined, RULES), null);
  assert.equal(parseResponseFormat({ type: "text" }, RULES), null);
  assert.deepEqual(parseResponseFormat({ type: "json_object" }, RULES), { schema: { type: "object" }, strict: false });
});

test("a good schema passes as it is", () => {
  const schema = { type: "object", properties: { a: { enum: ["x", "y"] }, b: { $ref: "#/$defs/n" } }, required: ["a"],
                   $defs: { n: { type: "integer", minimum: 0 } } };
  assert.deepEqual(parseResponseFormat(format(schema), RULES), { schema, strict: true });
});

test("each refusal names the part", () => {
  refused({ type: "object", properties: { age: { type: "whole number" } } }, "schema.properties.age.type");
  refused({ type: "array", uniqueItems: true }, 'the keyword "uniqueItems" cannot be enforced');
  refused({ properties: { a: { $ref: "#/$defs/missing" } } }, "does not point into this schema");
  refused({ $ref: "#" }, "leads back to itself");
  refused({ type: "object", properties: {}, required: ["b"] }, '"b" is required but not in properties');
  refused({ type: "string", pattern: "(" }, "schema.pattern");
});

test("the size limits: characters, nesting, literal strings", () => {
  refused({ enum: ["a".repeat(2100)] }, "characters as JSON; the limit is 2000");
  let deep = { type: "string" };
  for (let i = 0; i < 10; i++) deep = { type: "array", items: deep };
  refused(deep, "nests objects and lists 11 deep; the limit is 8");
  refused({ enum: ["a".repeat(60)] }, "too long to compile quickly");
  refused({ enum: ["a".repeat(45), "b".repeat(45), "c".repeat(45)] }, "and 120 in all");
});

// What xgrammar compiles without enforcing, and loops of references that read nothing: the server's refusals
// (router/grammar.py; that the words are the server's very words is tests/router/test_structured_output.py).
test("what the grammar would not enforce is refused, naming the part", () => {
  refused({ allOf: [{ type: "integer", minimum: 5 }, { type: "integer", maximum: 10 }] },
          'schema.allOf: "allOf" with more than one schema cannot be enforced');
  refused({ type: "integer", allOf: [{ minimum: 5 }] }, 'schema.type: "type" beside "allOf" cannot be enforced');
  // named in the list's order (type before maximum), not the schema's
  refused({ maximum: 10, anyOf: [{ type: "integer" }], type: "integer" }, 'schema.type: "type" beside "anyOf"');
  refused({ $defs: { o: { type: "object" } }, $ref: "#/$defs/o", required: ["a"] },
          'schema.required: "required" beside "$ref"');
  refused({ type: "integer", multipleOf: 3, minimum: 0, maximum: 100000 }, 'schema.multipleOf: the keyword "multipleOf"');
  refused({ oneOf: [{ type: "integer", minimum: 0 }, { type: "integer", maximum: 10 }] },
          'schema.oneOf: "oneOf" cannot be enforced');
  refused({ oneOf: [{ enum: ["a", "b"] }, { enum: ["b", "c"] }] }, "a value may match several");
});

test("a loop through $ref, anyOf, oneOf or allOf is refused at its $ref, however long", () => {
  refused({ $defs: { a: { anyOf: [{ $ref: "#/$defs/a" }] } }, $ref: "#/$defs/a" },
          'schema.$defs.a.anyOf[0].$ref: "#/$defs/a" leads back to itself');
  refused({ anyOf: [{ $ref: "#" }, { type: "integer" }] }, 'schema.anyOf[0].$ref: "#" leads back to itself');
  refused({ $defs: { a: { oneOf: [{ $ref: "#/$defs/b" }] }, b: { allOf: [{ $ref: "#/$defs/a" }] } }, $ref: "#/$defs/a" },
          "schema.$defs.a.oneOf[0].$ref");
  // 3000 references round: a walk with a stack, no recursion to run out of
  const ring = Array.from({ length: 3000 }, (_, i) => [`d${i}`, { $ref: `#/$defs/d${(i + 1) % 3000}` }]);
  const roomy = { ...RULES, limits: { ...RULES.limits, max_chars: 1e6, max_literals_chars: 1e6 } };
  assert.throws(() => parseResponseFormat(format({ $defs: Object.fromEntries(ring), $ref: "#/$defs/d0" }), roomy),
                /schema\.\$defs\.d0\.\$ref: "#\/\$defs\/d1" leads back to itself/);
});

test("what the grammar enforces passes: one allOf, exclusive oneOf, a loop that reads '[' first", () => {
  for (const schema of [
    { description: "one", allOf: [{ type: "integer", minimum: 5, maximum: 9 }] },
    { oneOf: [{ const: "a" }, { enum: ["b", "c"] }] },
    { $defs: { A: { type: "object", properties: { k: { const: "a" } }, required: ["k"] },
               B: { type: "object", properties: { k: { const: "b" } }, required: ["k"] } },
      oneOf: [{ $ref: "#/$defs/A" }, { $ref: "#/$defs/B" }] },
    { anyOf: [{ type: "integer" }, { type: "null" }], default: null, title: "n" },
    { $defs: { n: { anyOf: [{ type: "string" }, { type: "array", items: { $ref: "#/$defs/n" } }] } }, $ref: "#/$defs/n" },
  ]) assert.deepEqual(parseResponseFormat(format(schema), RULES), { schema, strict: true });
});

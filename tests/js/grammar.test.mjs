// The browser's schema checks before web-xgrammar compiles (webapp/client/lib/engine/grammar.js). The
// rules are the server's shape (page config engine.grammar); that the words equal the server's is
// tests/router/test_structured_output.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ErrorKind } from "../../webapp/client/lib/engine/errors.js";
import { parseResponseFormat } from "../../webapp/client/lib/engine/grammar.js";

const RULES = { json_style: { any_whitespace: false, separators: [", ", ": "] }, unsupported_keywords: ["uniqueItems", "not"],
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

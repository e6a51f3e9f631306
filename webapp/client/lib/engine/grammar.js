// Structured output in the browser: OpenAI's `response_format` compiled by web-xgrammar against the
// model's vocabulary, and applied as a mask on the logits before every token, as the server does with
// xgrammar (router/grammar/). The JSON style and the keywords xgrammar cannot enforce come from the
// server (page config `engine.grammar`), so both paths compile the same grammar.
import { EngineError, ErrorKind } from "./errors.js";

const BASE = "response_format.json_schema.schema";
const TYPES = new Set(["object", "array", "string", "number", "integer", "boolean", "null"]);
const NUMERIC = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
                 "minItems", "maxItems", "minProperties", "maxProperties"];
const CHILD = ["items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
               "unevaluatedProperties", "unevaluatedItems"];
const CHILDREN_BY_NAME = ["properties", "$defs", "definitions", "patternProperties", "dependentSchemas"];
const CHILDREN_BY_INDEX = ["anyOf", "oneOf", "allOf", "prefixItems"];
// In a subschema holding one of these, xgrammar follows only the first present and ignores every other
// keyword that constrains the value; the same lists as router/grammar/schema_checks.py COMBINATORS and ASSERTIONS.
const COMBINATORS = ["$ref", "anyOf", "oneOf", "allOf"];
const ASSERTIONS = ["type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
                    "maxLength", "minLength", "pattern", "format", "maxItems", "minItems", "uniqueItems", "maxContains",
                    "minContains", "maxProperties", "minProperties", "required", "dependentRequired", "properties",
                    "patternProperties", "additionalProperties", "propertyNames", "items", "prefixItems", "contains",
                    "unevaluatedItems", "unevaluatedProperties", "dependentSchemas", "not", "if", "then", "else",
                    ...COMBINATORS];

const schemaError = (message) => new EngineError(ErrorKind.InvalidSchema, message);
// A grammar no token may start (a loop of rules that read nothing, should checkSchema miss one); the server's words.
const NO_FIRST_TOKEN = "the schema cannot be compiled to a grammar: no JSON value can start it (does it refer to itself?)";

// null for plain text; otherwise {schema, strict}. Throws InvalidSchemaError naming the offending part.
export function parseResponseFormat(value, rules) {
  if (value === undefined || value === null || value.type === "text") return null;
  if (value.type === "json_object") return { schema: { type: "object" }, strict: false };
  if (value.type !== "json_schema")
    throw schemaError('response_format.type must be "text", "json_object" or "json_schema"');
  const schema = value.json_schema?.schema;
  if (!schema || typeof schema !== "object" || Array.isArray(schema))
    throw schemaError(`${BASE} must be a JSON schema object`);
  checkSchemaAt(schema, BASE, rules);
  return { schema, strict: true };
}

// Throws InvalidSchemaError when `schema` (at `base` in the request) cannot be enforced, as the server's
// check_schema does; a tool's parameters are checked here too (tools.js).
export function checkSchemaAt(schema, base, rules) {
  checkLimits(schema, base, rules.limits);
  checkSchema(schema, base, rules, schema, { chars: 0 });
}

// The server's SCHEMA_LIMITS (router/grammar/schema_checks.py), checked the same way: size and nesting first, without
// recursion, so that nothing after meets a schema too big to walk.
function checkLimits(schema, base, limits) {
  const chars = JSON.stringify(schema).length;
  if (chars > limits.max_chars) throw schemaError(`${base} is ${chars} characters as JSON; the limit is ${limits.max_chars}`);
  let deepest = 0;
  const stack = [[schema, 1]];
  while (stack.length) {
    const [node, depth] = stack.pop();
    deepest = Math.max(deepest, depth);
    for (const child of Object.values(node)) if (child && typeof child === "object") stack.push([child, depth + 1]);
  }
  if (deepest > limits.max_depth)
    throw schemaError(`${base} nests objects and lists ${deepest} deep; the limit is ${limits.max_depth}`);
}

// The strings a keyword puts into the grammar verbatim (compiling costs grow with the square of their length).
function literalStrings(key, value) {
  if (key === "enum" || key === "const") return (key === "enum" && Array.isArray(value) ? value : [value]).map((v) => JSON.stringify(v));
  if (key === "properties" && value && typeof value === "object") return Object.keys(value);
  return key === "pattern" && typeof value === "string" ? [value] : [];
}

function countLiterals(key, value, where, limits, literals) {
  for (const literal of literalStrings(key, value)) {
    literals.chars += literal.length;
    if (literal.length > limits.max_literal_chars || literals.chars > limits.max_literals_chars)
      throw schemaError(`${where}: the schema's strings are too long to compile quickly: at most ` +
                        `${limits.max_literal_chars} characters each (enum and const values, property names, ` +
                        `patterns) and ${limits.max_literals_chars} in all`);
  }
}

// Whether `start` comes back to itself through $ref, anyOf, oneOf and allOf alone (e.g. {"$ref": "#"},
// {"anyOf": [{"$ref": "#"}]}): a grammar rule that calls itself before reading any JSON. Alone, xgrammar
// makes it a grammar no token may start; beside another branch it only adds nothing. A walk with a stack,
// each node once: no recursion.
function refersToItself(root, start) {
  const stack = passesTo(root, start), seen = new Set();
  while (stack.length) {
    const node = stack.pop();
    if (node === start) return true;
    if (!seen.has(node)) {
      seen.add(node);
      stack.push(...passesTo(root, node));
    }
  }
  return false;
}

// The subschemas a value of `node` must also be a value of, from its first character: what its $ref names
// and its anyOf, oneOf and allOf branches (not properties or items: those come after a '{' or '[').
function passesTo(root, node) {
  if (!isSchemaObject(node)) return [];
  const targets = "$ref" in node ? [resolve(root, node.$ref)] : [];
  for (const key of ["anyOf", "oneOf", "allOf"]) if (Array.isArray(node[key])) targets.push(...node[key]);
  return targets.filter(isSchemaObject);
}

const isSchemaObject = (node) => Boolean(node) && typeof node === "object" && !Array.isArray(node);

// What xgrammar makes of $ref, anyOf, oneOf and allOf, where it differs from JSON Schema: keywords beside
// them are ignored; allOf is enforced with one schema only; oneOf is anyOf (a value may match several).
function checkCombinator(root, node, key, value, path) {
  // named in the lists' order, not the schema's: the same words whatever order a client sends keys in
  const followed = COMBINATORS.find((name) => Object.hasOwn(node, name));
  const beside = ASSERTIONS.find((name) => Object.hasOwn(node, name) && name !== followed);
  if (beside !== undefined)
    throw schemaError(`${path}.${beside}: "${beside}" beside "${followed}" cannot be enforced while generating ` +
                      "(the grammar follows only one of them); move it inside, or remove it");
  if (key === "allOf" && value.length > 1)
    throw schemaError(`${path}.${key}: "allOf" with more than one schema cannot be enforced while generating; ` +
                      "merge them into one schema");
  if (key === "oneOf" && value.length > 1 && !exclusive(root, value))
    throw schemaError(`${path}.${key}: "oneOf" cannot be enforced while generating (a value may match several of its ` +
                      'schemas); use "anyOf", or make its schemas plainly exclusive: all const or enum with ' +
                      "distinct values, or all objects requiring one property with a distinct const");
}

// Whether no value can match two of `branches`, in the two forms that are easy to prove (there oneOf is
// anyOf, which the grammar enforces): all literals, no value in two branches; or all of type object, each
// requiring one same property with a const of its own (a tagged union).
function exclusive(root, branches) {
  const literals = branches.map((branch) => branchLiterals(root, branch));
  if (literals.every((values) => values !== null))
    return new Set(literals.flatMap((values) => [...values])).size ===
           literals.reduce((count, values) => count + values.size, 0);
  const tags = branches.map((branch) => objectTags(root, branch));
  const shared = Object.keys(tags[0]).filter((name) => tags.every((tag) => Object.hasOwn(tag, name)));
  return shared.some((name) => new Set(tags.map((tag) => tag[name])).size === tags.length);
}

// The values a const or enum branch allows (keyed as scalarKey does), or null when it is no such branch.
function branchLiterals(root, branch) {
  branch = followRefs(root, branch);
  if (!isSchemaObject(branch) || !("const" in branch || Array.isArray(branch.enum))) return null;
  const keys = ("const" in branch ? [branch.const] : branch.enum).map(scalarKey);
  return keys.includes(null) ? null : new Set(keys);
}

// {property: its const} for the required properties of an object branch that each hold one value.
function objectTags(root, branch) {
  branch = followRefs(root, branch);
  if (!isSchemaObject(branch) || branch.type !== "object") return {};
  const properties = branch.properties ?? {}, tags = {};
  for (const name of Array.isArray(branch.required) ? branch.required : []) {
    const prop = Object.hasOwn(properties, name) ? properties[name] : undefined;
    const values = isSchemaObject(prop) ? ("const" in prop ? [prop.const] : prop.enum) : undefined;
    if (Array.isArray(values) && values.length === 1 && scalarKey(values[0]) !== null)
      tags[name] = scalarKey(values[0]);
  }
  return tags;
}

// A key equal for equal JSON scalars (1 and 1.0 alike, true and 1 not), or null for a list or object.
const scalarKey = (value) => (value === null ? "null" : typeof value === "object" ? null : `${typeof value}:${value}`);

// The subschema a chain of $ref ends at (bounded: loops are refused elsewhere, maybe later).
function followRefs(root, node, steps = 64) {
  for (; steps && isSchemaObject(node) && typeof node.$ref === "string"; steps--) node = resolve(root, node.$ref);
  return node;
}

// web-xgrammar aborts its whole wasm instance on a schema it cannot compile, so what can be checked here
// is checked here, with the path of the offending part.
function checkSchema(node, path, rules, root, literals) {
  if (typeof node === "boolean") return;
  if (!node || typeof node !== "object" || Array.isArray(node)) throw schemaError(`${path} must be a schema object`);
  for (const [key, value] of Object.entries(node)) {
    const where = `${path}.${key}`;
    countLiterals(key, value, where, rules.limits, literals);
    if (rules.unsupported_keywords.includes(key) && !(key === "uniqueItems" && value === false))
      throw schemaError(`${where}: the keyword "${key}" cannot be enforced while generating; remove it ` +
                        "(and check it after generation if you need it)");
    if (key === "type" && ![value].flat().every((t) => TYPES.has(t)))
      throw schemaError(`invalid JSON schema at ${where}: ${JSON.stringify(value)} is not a JSON type`);
    if (NUMERIC.includes(key) && typeof value !== "number")
      throw schemaError(`invalid JSON schema at ${where}: ${JSON.stringify(value)} is not a number`);
    if (key === "required" && !(Array.isArray(value) && value.every((v) => typeof v === "string")))
      throw schemaError(`invalid JSON schema at ${where}: must be a list of property names`);
    if (key === "enum" && !Array.isArray(value)) throw schemaError(`invalid JSON schema at ${where}: must be a list`);
    if (key === "$ref" && resolve(root, value) === undefined)
      throw schemaError(`${where}: ${JSON.stringify(value)} does not point into this schema (only "#/..." references are followed)`);
    if (COMBINATORS.includes(key) && (key === "$ref" || Array.isArray(value)))  // not a list: refused below
      checkCombinator(root, node, key, value, path);
    if (key === "$ref" && refersToItself(root, node))
      throw schemaError(`${where}: ${JSON.stringify(value)} leads back to itself through references and anyOf/oneOf/` +
                        "allOf alone, before any JSON is read, so the grammar cannot be built: remove that loop");
    const missing = key === "required" && Array.isArray(value) ? value.find((name) => !Object.hasOwn(node.properties ?? {}, name)) : undefined;
    if (missing !== undefined)
      throw schemaError(`${where}: ${JSON.stringify(missing)} is required but not in properties, so it could not be ` +
                        "generated: add it to properties or drop it from required");
    if (key === "pattern") checkPattern(value, where);
    if (CHILD.includes(key)) checkSchema(value, where, rules, root, literals);
    if (CHILDREN_BY_NAME.includes(key))
      for (const [name, sub] of Object.entries(value ?? {})) checkSchema(sub, `${where}.${name}`, rules, root, literals);
    if (CHILDREN_BY_INDEX.includes(key)) {
      if (!Array.isArray(value)) throw schemaError(`invalid JSON schema at ${where}: must be a list of schemas`);
      value.forEach((sub, i) => checkSchema(sub, `${where}[${i}]`, rules, root, literals));
    }
  }
}

// The subschema a local JSON pointer ("#/$defs/x") names, or undefined.
function resolve(root, ref) {
  if (typeof ref !== "string" || !ref.startsWith("#")) return undefined;
  const steps = ref.slice(1).split("/").filter(Boolean).map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
  return steps.reduce((node, step) => (node && typeof node === "object" ? node[step] : undefined), root);
}

function checkPattern(pattern, where) {
  try {
    new RegExp(pattern, "u");
  } catch (error) {
    throw schemaError(`invalid JSON schema at ${where}: ${error.message}`);
  }
}

// Compiles response formats for one model's vocabulary; loaded only when a structured answer is asked for.
export class Grammars {
  // `instance` makes a fresh copy of the library (a new URL is a new module) after one aborted.
  static async create(xgrammarUrl, tokenizer, config, rules, instance = 0) {
    // The wasm module binds console.error when it starts, and prints there why it aborts: it gets a
    // function that the compile below can point elsewhere.
    const grammars = new Grammars();
    const consoleError = console.error;
    console.error = (...parts) => (grammars.printed ? grammars.printed.push(parts.join(" ")) : consoleError(...parts));
    try {
      await import(instance ? `${xgrammarUrl}?instance=${instance}` : xgrammarUrl);  // UMD: sets globalThis.xgrammar
      const xgr = globalThis.xgrammar;
      const vocab = Array.from({ length: config.vocab_size }, (_, i) => tokenizer.idToToken(i) ?? "");
      const info = await xgr.TokenizerInfo.createTokenizerInfo(vocab, config.tokenizer_info.vocab_type,
        config.tokenizer_info.add_prefix_space, config.vocab_size, config.stop_token_ids);
      Object.assign(grammars, { xgr, rules, compiler: await xgr.GrammarCompiler.createGrammarCompiler(info) });
    } finally {
      console.error = consoleError;
    }
    return grammars;
  }

  constraint(format) {
    const { any_whitespace, separators } = this.rules.json_style;
    return this.compiled(() => this.compiler.compileJSONSchema(JSON.stringify(format.schema), any_whitespace, -1,  // -1: no indent
                                                               separators, format.strict));
  }

  // The mask for an answer that may (or must) call tools: `tag` is tools.js's structural tag. Its json_schema
  // contents are written as grammars in the server's JSON style first (a structural tag's own JSON allows
  // any whitespace, which small models fill until max_tokens), as router/grammar/compilers.py does.
  toolConstraint(tag) {
    return this.compiled(async () => this.compiler.compileStructuralTag(JSON.stringify(await this.inJsonStyle(tag))));
  }

  async inJsonStyle(node) {
    if (Array.isArray(node)) return Promise.all(node.map((item) => this.inJsonStyle(item)));
    if (!isSchemaObject(node)) return node;
    if (node.type === "json_schema") {
      const { any_whitespace, separators } = this.rules.json_style;
      const grammar = await this.xgr.Grammar.fromJSONSchema(JSON.stringify(node.json_schema), any_whitespace, -1, separators, true);
      try {
        return { type: "grammar", grammar: grammar.toString() };
      } finally {
        grammar.dispose?.();
      }
    }
    const entries = await Promise.all(Object.entries(node).map(async ([key, value]) => [key, await this.inJsonStyle(value)]));
    return Object.fromEntries(entries);
  }

  async compiled(compile) {
    let compiled;
    // A failed compile aborts the wasm instance, which prints why: keep that for the error, off the console.
    this.printed = [];
    try {
      compiled = await compile();
    } catch (error) {
      this.aborted = true;
      throw schemaError(`the schema cannot be compiled to a grammar: ${xgrammarMessage(this.printed[0] ?? error)}`);
    } finally {
      this.printed = null;
    }
    const constraint = new Constraint(await this.xgr.GrammarMatcher.createGrammarMatcher(compiled));
    if (!(await constraint.canStart())) {  // every logit would be -inf: no token could be sampled
      constraint.dispose();
      throw schemaError(NO_FIRST_TOKEN);
    }
    return constraint;
  }
}

// One answer's grammar state: masks the logits before each token and follows the tokens chosen.
// `ms` adds up the time spent on both: the cost of constraining, which the bench reports.
export class Constraint {
  constructor(matcher) { Object.assign(this, { matcher, ms: 0 }); }

  // Whether the grammar allows some first token (the mask is computed again for the first token).
  async canStart() { return (await this.matcher.getNextTokenBitmask()).some((word) => word !== 0); }

  acceptText(text) { return this.matcher._acceptString(text); }

  async mask(logits) {
    const started = performance.now();
    const bits = await this.matcher.getNextTokenBitmask();
    for (let i = 0; i < logits.length; i++) if (!((bits[i >>> 5] >>> (i & 31)) & 1)) logits[i] = -Infinity;
    this.ms += performance.now() - started;
    return logits;
  }

  accept(token) {
    const started = performance.now();
    const accepted = this.matcher.acceptToken(token);
    this.ms += performance.now() - started;
    if (!accepted) throw new Error(`the grammar refused token ${token}, which its own mask allowed`);
  }

  dispose() { this.matcher.dispose(); }
}

// xgrammar's C++ errors start with a timestamp and a source location; keep the sentence.
function xgrammarMessage(error) {
  const text = String(error?.message ?? error).trim().split("\n")[0];
  return text.replace(/^\[[^\]]*\]\s*\S+:\d+:\s*/, "").replace(/^Check failed: \(.*\) is false: /, "");
}

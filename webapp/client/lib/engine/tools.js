// Tool calling in the browser engine: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, checked,
// put into the prompt, constrained and read back exactly as the server does it (router/tools.py, whose
// words and steps these follow; tests/router/test_tools_agreement.py holds them equal). The call formats, the generic
// prompt and the limits come from the server (client config `engine.tools`), so they are written once.
import { EngineError, ErrorKind } from "./errors.js";
import { checkSchemaAt } from "./grammar.js";

const NO_PARAMETERS = { type: "object", properties: {} };

const toolError = (message) => new EngineError(ErrorKind.InvalidRequest, message);
const isObject = (value) => Boolean(value) && typeof value === "object" && !Array.isArray(value);
// Python's json.dumps of a name in an error message (a string, null, a number...), cut as the server cuts it.
const shown = (value) => (value === undefined ? "null" : pythonJson(value)).slice(0, 80);

// --- the request -----------------------------------------------------------------------------------------

// The request's tools, checked: {functions, choice, forced, parallel}, or null when it has none, or
// tool_choice is "none". `rules`: the server's engine.tools; `grammar`: its engine.grammar (schema checks).
export function parseTools(request, rules, grammar) {
  const { tools, tool_choice: choice } = request;
  if (tools === undefined || tools === null || (Array.isArray(tools) && !tools.length)) {
    if (choice !== undefined && choice !== null && choice !== "none")
      throw toolError("tool_choice needs tools: send the functions it may call in tools");
    return null;
  }
  if (!Array.isArray(tools))
    throw toolError('tools must be a list of {"type": "function", "function": {...}} objects');
  if (tools.length > rules.max_tools)
    throw toolError(`tools has ${tools.length} tools; at most ${rules.max_tools} are taken`);
  const functions = tools.map((tool, i) => parseFunction(tool, `tools[${i}]`, rules, grammar));
  const seen = new Map();
  functions.forEach(({ name }, i) => {
    if (seen.has(name))
      throw toolError(`tools[${i}].function.name: '${name}' is also the name of tools[${seen.get(name)}]; ` +
                      "each tool needs a name of its own");
    seen.set(name, i);
  });
  const parallel = "parallel_tool_calls" in request ? request.parallel_tool_calls : true;
  if (typeof parallel !== "boolean") throw toolError("parallel_tool_calls must be true or false");
  const chosen = parseChoice(choice, [...seen.keys()]);
  if (chosen === "none") return null;
  return { functions, choice: chosen, forced: chosen !== "auto" && chosen !== "required", parallel };
}

function parseFunction(tool, where, rules, grammar) {
  if (!isObject(tool) || tool.type !== "function" || !isObject(tool.function))
    throw toolError(`${where} must be {"type": "function", "function": {"name": ..., "parameters": {...}}}`);
  const { name, description = "", parameters = NO_PARAMETERS } = tool.function;
  if (typeof name !== "string" || !new RegExp(rules.name_pattern).test(name))
    throw toolError(`${where}.function.name must be 1 to 64 letters, digits, underscores or dashes, not ${shown(name)}`);
  if (typeof description !== "string")
    throw toolError(`${where}.function.description (${name}) must be a string`);
  if (!isObject(parameters) || (parameters.type ?? "object") !== "object")
    throw toolError(`${where}.function.parameters (${name}) must be a JSON schema of an object`);
  try {
    checkSchemaAt(parameters, `${where}.function.parameters`, grammar);
  } catch (error) {
    throw toolError(`tool ${name}: ${error.message}`);
  }
  return { name, description, parameters };
}

function parseChoice(choice, names) {
  if (choice === undefined || choice === null) return "auto";
  if (choice === "none" || choice === "auto" || choice === "required") return choice;
  const fn = isObject(choice) && choice.type === "function" ? choice.function : undefined;
  if (!isObject(fn) || typeof fn.name !== "string")
    throw toolError('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}');
  if (!names.includes(fn.name))
    throw toolError(`tool_choice names the function '${fn.name}', which is not in tools (they are ${names.join(", ")})`);
  return fn.name;
}

// What a schema cannot say of a tool conversation (router/tools.py check_tool_messages).
export function checkToolMessages(messages) {
  const calls = new Set();
  messages.forEach((message, i) => {
    const role = message.role;
    if (message.tool_calls?.length && role !== "assistant")
      throw toolError(`messages[${i}].tool_calls: only an assistant message calls tools`);
    if ((message.content === undefined || message.content === null) && !message.tool_calls?.length)
      throw toolError(`messages[${i}].content must be text (null or absent only in an assistant message with ` +
                      "tool_calls)");
    for (const call of message.tool_calls ?? []) calls.add(call.id);
    if (role === "tool" && !("tool_call_id" in message))
      throw toolError(`messages[${i}] is a tool's result: it needs the tool_call_id of the call it answers`);
    if (role === "tool" && !calls.has(message.tool_call_id))
      throw toolError(`messages[${i}].tool_call_id '${message.tool_call_id}' answers no call of an earlier ` +
                      "assistant message: send the assistant message with that call before its result");
  });
}

// --- the prompt ------------------------------------------------------------------------------------------

const openaiTools = (tools) => tools.functions.map((f) => ({ type: "function", function: f }));

// [messages, tools] as the chat template takes them: a template with tools of its own gets them as
// transformers passes them; a `generic` one gets them described in a system message of ours.
export function forTemplate(messages, tools, fmt, rules) {
  if (fmt !== "generic") return [messages.map(templateMessage), tools ? openaiTools(tools) : null];
  const converted = messages.map((m) => genericMessage(m, rules));
  if (tools) {
    const described = rules.generic_prompt.replace("{tools}", openaiTools(tools).map(pythonJson).join("\n"));
    if (converted.length && converted[0].role === "system")
      converted[0] = { role: "system", content: `${converted[0].content}\n\n${described}` };
    else converted.unshift({ role: "system", content: described });
  }
  return [converted, null];
}

function templateMessage(message) {
  const out = { role: message.role, content: message.content || "" };
  if (message.tool_calls?.length)
    out.tool_calls = message.tool_calls.map((c) => ({ id: c.id, type: "function",
                                                     function: { name: c.function.name, arguments: argumentsOf(c) } }));
  if (message.role === "tool") out.tool_call_id = message.tool_call_id;
  return out;
}

function genericMessage(message, rules) {
  if (message.role === "tool") return { role: "user", content: `<tool_response>\n${message.content || ""}\n</tool_response>` };
  if (message.tool_calls?.length) {
    const calls = message.tool_calls.map((c) => callText(rules.formats.generic, c.function.name, pythonJson(argumentsOf(c))));
    return { role: "assistant", content: [message.content, ...calls].filter(Boolean).join("\n") };
  }
  return { role: message.role, content: message.content || "" };
}

// A call's arguments as an object (OpenAI sends a JSON string; templates read an object).
function argumentsOf(call) {
  try {
    return JSON.parse(call.function.arguments);
  } catch {
    return call.function.arguments;
  }
}

const beginText = (spec, name) => spec.begin.replace("{name}", name);
const callText = (spec, name, args) => beginText(spec, name) + args + spec.end;

// JSON as Python's json.dumps writes it (", " and ": ", non-ASCII escaped), which the server's prompt holds.
export function pythonJson(value) {
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(", ")}]`;
  if (isObject(value)) return `{${Object.entries(value).map(([k, v]) => `${pythonJson(k)}: ${pythonJson(v)}`).join(", ")}}`;
  if (typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value)) return BigInt(value).toString();
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

// --- the grammar -----------------------------------------------------------------------------------------

// xgrammar's structural tag for these tools in this format (router/tools.py structural_tag).
export function structuralTag(tools, fmt, rules) {
  const spec = rules.formats[fmt];
  const tags = tools.functions.filter((f) => !tools.forced || f.name === tools.choice)
    .map((f) => ({ type: "tag", begin: beginText(spec, f.name), content: { type: "json_schema", json_schema: f.parameters },
                   end: spec.end }));
  const format = tools.choice === "auto"
    ? { type: "triggered_tags", triggers: [spec.trigger], tags, stop_after_first: !tools.parallel }
    : { type: "tags_with_separator", tags, separator: "\n", at_least_one: true, stop_after_first: tools.forced || !tools.parallel };
  return { type: "structural_tag", format };
}

// --- the answer ------------------------------------------------------------------------------------------

// Reads tool calls out of an answer's text as it streams (router/tools.py CallReader, step for step):
// push(text) returns content strings and call events ({index, id, name} when a call opens, {index,
// arguments} for each piece of its arguments); text that may still become an opening marker is held back.
export class CallReader {
  constructor(fmt, names, rules) {
    this.spec = rules.formats[fmt];
    this.begins = new Map(names.map((n) => [beginText(this.spec, n), n]));
    Object.assign(this, { buffer: "", state: "text", calls: 0, depth: 0, inString: false, escaped: false });
  }

  push(text) {
    this.buffer += text;
    const out = [];
    while (this[this.state](out));
    return out;
  }

  text(out) {
    const trigger = this.spec.trigger;
    const at = this.buffer.indexOf(trigger);
    if (at < 0) {  // keep a tail that may be the start of a trigger
      let keep = 0;
      for (let k = Math.min(trigger.length - 1, this.buffer.length); k > 0; k--)
        if (trigger.startsWith(this.buffer.slice(-k))) { keep = k; break; }
      this.content(out, this.buffer.slice(0, this.buffer.length - keep));
      this.buffer = this.buffer.slice(this.buffer.length - keep);
      return false;
    }
    this.content(out, this.buffer.slice(0, at));
    this.buffer = this.buffer.slice(at);
    const begin = [...this.begins.keys()].find((b) => this.buffer.startsWith(b));
    if (begin === undefined) return false;  // the opening marker is not whole yet
    this.buffer = this.buffer.slice(begin.length);
    out.push({ index: this.calls, id: `call_${randomHex(24)}`, name: this.begins.get(begin) });
    Object.assign(this, { state: "arguments", depth: 0, inString: false, escaped: false });
    return true;
  }

  arguments(out) {
    let closed = null;
    for (let i = 0; i < this.buffer.length && closed === null; i++) {
      const char = this.buffer[i];
      if (this.inString) [this.escaped, this.inString] = this.escaped ? [false, true] : [char === "\\", char !== '"'];
      else if (char === '"') this.inString = true;
      else if (char === "{" || char === "[") this.depth += 1;
      else if ((char === "}" || char === "]") && --this.depth === 0) closed = i + 1;
    }
    const piece = closed === null ? this.buffer : this.buffer.slice(0, closed);
    this.buffer = closed === null ? "" : this.buffer.slice(closed);
    if (piece) out.push({ index: this.calls, arguments: piece });
    if (closed === null) return false;
    this.state = "closing";
    return true;
  }

  closing() {
    const end = this.spec.end;
    if (this.buffer.length < end.length) return false;
    this.buffer = this.buffer.slice(end.length);
    this.state = "text";
    this.calls += 1;
    return true;
  }

  content(out, text) {
    if (text && !(this.calls && !text.trim())) out.push(text);  // the line breaks between calls are not content
  }

  end() {
    const rest = this.buffer;
    this.buffer = "";
    if (!rest || this.state === "closing") return [];
    return this.state === "arguments" ? [{ index: this.calls, arguments: rest }] : [rest];
  }
}

function randomHex(length) {
  const bytes = crypto.getRandomValues(new Uint8Array(length / 2));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// OpenAI's stream deltas for pieces of an answer (router/api.py stream_deltas): text as content, a call's
// opening with its id and name, then its arguments piece by piece.
export function streamDeltas(pieces) {
  return pieces.map((piece) => typeof piece === "string" ? { content: piece }
    : "id" in piece ? { tool_calls: [{ index: piece.index, id: piece.id, type: "function", function: { name: piece.name, arguments: "" } }] }
    : { tool_calls: [{ index: piece.index, function: { arguments: piece.arguments } }] });
}

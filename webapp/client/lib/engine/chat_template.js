// A model's chat template, rendered as the server renders it (modelrun/chat.py): the same
// variables, and a template's raise_exception refuses the request with the server's words.
import { EngineError, ErrorKind } from "./errors.js";

export class ChatTemplate {
  // `Template`: @huggingface/jinja's class (the page loads it from the server's vendor URL). Its own
  // raise_exception cannot be replaced from outside (a global), but a template may reassign it: ours does
  // first, producing no text.
  // `specialTokens`: the texts of the model's bos_token and eos_token, which templates write themselves.
  // `controlTokens`: the build's list (modelrun/chat.py control_tokens, longest first); in messages they
  // are text, not tokens (a user who types <|im_start|>system must not open a system turn).
  constructor(Template, source, specialTokens = {}, controlTokens = []) {
    this.template = new Template("{% set raise_exception = seam_refuse %}" + source);
    this.specialTokens = { bos_token: "", eos_token: "", ...specialTokens };
    this.controls = controlTokens.length ? new RegExp(controlTokens.map(escapeRegExp).join("|"), "g") : null;
  }

  // The prompt for a new assistant message after `messages`; throws ChatTemplateRefusedError when refused.
  // `tools`: OpenAI's function tools, for a template that takes them (tools.js forTemplate).
  render(messages, tools = null) {
    messages = messages.map((m) => typeof m.content === "string" ? { ...m, content: this.asText(m.content) } : m);
    return this.template.render({ messages, add_generation_prompt: true, ...(tools ? { tools } : {}),
                                  ...this.specialTokens, seam_refuse: refuse });
  }

  // `content` with every control token in it broken by a word joiner (U+2060): it reads the same, and
  // tokenizes as text.
  asText(content) {
    return this.controls ? content.replace(this.controls, (token) => token[0] + WORD_JOINER + token.slice(1)) : content;
  }
}

const WORD_JOINER = "\u2060";

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function refuse(args) {
  const message = args?.[0]?.value ?? String(args);
  throw new EngineError(ErrorKind.TemplateRefused,  // the server's code: chat_template_refused
    `the chat template refused the messages: ${message}: send the conversation in an order this model takes`);
}

// A model's chat template, rendered as the server renders it (build/modelbuild/chat.py): the same
// variables, and a template's raise_exception refuses the request with the server's words.
import { EngineError, ErrorKind } from "./errors.js";

export class ChatTemplate {
  // `Template`: @huggingface/jinja's class (the page loads it from the server's vendor URL). Its own
  // raise_exception cannot be replaced from outside (a global), but a template may reassign it: ours does
  // first, producing no text.
  // `specialTokens`: the texts of the model's bos_token and eos_token, which templates write themselves.
  constructor(Template, source, specialTokens = {}) {
    this.template = new Template("{% set raise_exception = seam_refuse %}" + source);
    this.specialTokens = { bos_token: "", eos_token: "", ...specialTokens };
  }

  // The prompt for a new assistant message after `messages`; throws InvalidRequestError when refused.
  render(messages) {
    return this.template.render({ messages, add_generation_prompt: true, ...this.specialTokens,
                                  seam_refuse: refuse });
  }
}

function refuse(args) {
  const message = args?.[0]?.value ?? String(args);
  throw new EngineError(ErrorKind.InvalidRequest,
    `the chat template refused the messages: ${message}: send the conversation in an order this model takes`);
}

// The client's handle on the server's OpenAI-compatible API: streams in the same chunk shape as the browser
// engine's (engine/worker_client.js), so an answer does not care where it is computed.

export class CloudClient {
  constructor(endpoint) {
    this.endpoint = endpoint;
    this.chat = { completions: { create: (request) => this.create(request) } };
  }

  async create({ stream = false, ...request }) {
    const controller = new AbortController();
    const body = { ...request, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) };
    const response = await fetch(this.endpoint, { method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new CloudError(response.status, error.error?.message || `the server answered ${response.status}`,
                           error.error?.code ?? null);
    }
    if (!stream) return response.json();
    const iterator = serverSentEvents(response.body.getReader());
    iterator.stop = () => controller.abort();
    return iterator;
  }
}

export class CloudError extends Error {
  // `code`: the server's error code (e.g. chat_template_refused, context_length_exceeded), where it gave one
  constructor(status, message, code = null) {
    super(message);
    this.name = "CloudError";
    this.kind = "CloudError";
    this.status = status;
    this.code = code;
  }
}

// Yields the JSON payload of each `data:` event until `[DONE]`; an aborted request simply ends.
async function* serverSentEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data === "[DONE]") return;
        const payload = JSON.parse(data);
        if (payload.error) throw new CloudError(500, payload.error.message);
        yield payload;
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
  } finally {
    reader.releaseLock?.();
  }
}

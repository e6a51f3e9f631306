// An answer's stream of OpenAI chunks made into one completion object (a request without `stream`), as the
// server's are (router/api.py assistant_message): its text, and its tool calls put together from their
// pieces. The client's answers and the browser engine's handle (worker_client.js) both end here.
export async function complete(chunks) {
  let content = "", last = null;
  const calls = [];
  for await (const chunk of chunks) {
    const delta = chunk.choices[0]?.delta ?? {};
    content += delta.content ?? "";
    for (const piece of delta.tool_calls ?? []) {
      const call = (calls[piece.index] ??= { id: piece.id, type: "function", function: { name: piece.function?.name, arguments: "" } });
      call.function.arguments += piece.function?.arguments ?? "";
    }
    last = chunk;
  }
  const message = calls.length ? { role: "assistant", content: content.trim() || null, tool_calls: calls } : { role: "assistant", content };
  return { id: last.id, object: "chat.completion", created: last.created, model: last.model, usage: last.usage, seam: last.seam,
           choices: [{ index: 0, message, finish_reason: last.choices[0].finish_reason }] };
}

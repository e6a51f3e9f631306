// The Seam client: `const seam = await Seam.connect({ server })`, then OpenAI's
// `seam.chat.completions.create(request)`, answered in this browser or by the server (index.d.ts).
export { Seam } from "./lib/seam.js";
export { EngineError as SeamError, ErrorKind } from "./lib/engine/errors.js";

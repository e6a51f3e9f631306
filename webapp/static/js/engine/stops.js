// Stop strings, as the server's engine applies them (router/engine.py): the answer ends before the first
// stop string it contains, and while it streams, a tail that may still become a stop string is held back.
import { EngineError, ErrorKind } from "./errors.js";

// OpenAI's `stop`: a string or a list of at most 4 strings; [] when absent.
export function parseStop(stop) {
  if (stop === undefined || stop === null || stop === "") return [];
  const stops = typeof stop === "string" ? [stop] : stop;
  if (!Array.isArray(stops) || stops.length > 4 || !stops.every((s) => typeof s === "string"))
    throw new EngineError(ErrorKind.InvalidRequest, "stop must be a string or a list of at most 4 strings");
  return stops;
}

// Where the first stop string in `text` begins, or null.
export function firstStop(text, stops) {
  const hits = stops.filter((s) => s && text.includes(s)).map((s) => text.indexOf(s));
  return hits.length ? Math.min(...hits) : null;
}

// The length of the longest tail of `text` that is the start of a stop string.
export function heldBack(text, stops) {
  let longest = 0;
  for (const stop of stops)
    for (let n = Math.min(stop.length - 1, text.length); n > longest; n--)
      if (stop.startsWith(text.slice(text.length - n))) { longest = n; break; }
  return longest;
}

// The lifecycle of each model the browser engine holds, keyed by `id@version@backend` everywhere
// (this table, the worker and its client): one model version on one backend ("webgpu" or "cpu").
//
//   none → downloading → loading → checking → ready → retired (a newer version took over)
//                 ↘           ↘          ↘        ↘
//                   failed (with its reason; it is not tried again in this client)
//
// Pure: no browser APIs, so node tests every transition (tests/js/engine_states.test.mjs).

export const State = {
  None: "none", Downloading: "downloading", Loading: "loading", Checking: "checking", Ready: "ready",
  Failed: "failed", Retired: "retired",
};

const NEXT = {
  [State.None]: [State.Downloading],
  [State.Downloading]: [State.Loading, State.Failed],
  [State.Loading]: [State.Checking, State.Failed],
  [State.Checking]: [State.Ready, State.Failed],
  [State.Ready]: [State.Failed, State.Retired],
  [State.Failed]: [],
  [State.Retired]: [],
};

// A model's backend: its CPU build, or WebGPU whichever kernel set runs it.
export const backendOf = (kernels) => (kernels === "cpu" ? "cpu" : "webgpu");

export const engineKey = ({ id, version }, kernels) => `${id}@${version}@${backendOf(kernels)}`;

export function parseKey(key) {
  const [id, version, backend] = key.split("@");
  return { id, version, backend };
}

// Whether a state is on the way to ready (a load in progress).
export const isLoading = (state) => [State.Downloading, State.Loading, State.Checking].includes(state);

export class EngineStates {
  // `onChange(entry)` hears every transition: {key, id, version, backend, state, reason?, ...details}.
  constructor(onChange = () => {}) {
    this.entries = new Map();
    this.onChange = onChange;
  }

  get(key) {
    return this.entries.get(key) ?? { key, ...parseKey(key), state: State.None };
  }

  // Moves `key` to `state`, with `details` (an error's `reason`, a ready engine's adapter...). A move the
  // lifecycle does not allow is a bug in the caller: it throws, and nothing changes.
  move(key, state, details = {}) {
    const from = this.get(key);
    if (!NEXT[from.state].includes(state)) throw new Error(`engine ${key}: no transition from ${from.state} to ${state}`);
    const entry = { ...from, ...details, state };
    this.entries.set(key, entry);
    this.onChange(entry);
    return entry;
  }

  all() { return [...this.entries.values()]; }

  inState(...states) { return this.all().filter((e) => states.includes(e.state)); }

  // The versions of a variant this client still needs (loading, ready): never deleted from the cache.
  versionsInUse(id) {
    return this.all().filter((e) => e.id === id && (isLoading(e.state) || e.state === State.Ready)).map((e) => e.version);
  }
}

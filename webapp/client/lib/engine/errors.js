// Typed errors of the Seam client and its browser engine. Each says what happened and what to do; `kind`
// survives the trip from the worker to the page, where the seam decides on it (e.g. hand the answer to
// the server). The public API exports the class as SeamError (index.d.ts lists the kinds).

export const ErrorKind = {
  NoWebGPU: "WebGPUNotAvailableError",
  NoWasmSimd: "WasmSimdNotAvailableError",
  NoCpuBuild: "CpuBuildMissingError",
  OutOfMemory: "OutOfMemoryError",
  MissingFeature: "FeatureMissingError",
  LimitsTooSmall: "AdapterLimitsError",
  StorageQuota: "StorageQuotaError",
  Download: "DownloadError",
  Integrity: "IntegrityError",
  Shader: "ShaderCompilationError",
  DeviceLost: "DeviceLostError",
  GPUExecution: "GPUExecutionError",
  CPUExecution: "CPUExecutionError",
  ContextWindow: "ContextWindowError",
  NotLoaded: "EngineNotLoadedError",
  Restarted: "EngineRestartedError",
  SelfCheck: "SelfCheckError",
  NoEngine: "NoEngineError",
  InvalidSchema: "InvalidSchemaError",
  InvalidRequest: "InvalidRequestError",
  TemplateRefused: "ChatTemplateRefusedError",
  InvalidOption: "InvalidOptionError",
  ServerUnreachable: "ServerUnreachableError",
  OriginNotAllowed: "OriginNotAllowedError",
  ApiVersion: "ApiVersionError",
};

// Errors about the request itself (its schema, its length): the other path would refuse it too, and the
// engine is fine. Every other error means this browser could not answer, and the server may take over.
export const REQUEST_ERRORS = new Set([ErrorKind.ContextWindow, ErrorKind.InvalidSchema, ErrorKind.InvalidRequest,
                                       ErrorKind.TemplateRefused]);

export class EngineError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = kind;
    this.kind = kind;
  }

  toJSON() { return { kind: this.kind, message: this.message }; }

  static fromJSON({ kind, message }) { return new EngineError(kind, message); }
}

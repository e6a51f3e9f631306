"""The TVM 0.27 -> WebGPU/wasm toolchain: targets, the cached web runtime and the wasm linker."""

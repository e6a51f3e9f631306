#!/usr/bin/env bash
# The browser measurements of `make bench` on a machine with a real GPU (NVIDIA, Vulkan driver), where
# headless Chromium's WebGPU runs on Vulkan instead of SwiftShader. Needs what `make setup` installs
# (Debian's chromium, .venv, the built models) and the GPU's Vulkan ICD. Usage, from the repo root:
#   bash bench/gpu.sh [--repeats N] [more `python -m bench` arguments]
# Results go to bench/results/gpu-<card>/ ; the device line of the table names the adapter Chromium used.
set -euo pipefail
cd "$(dirname "$0")/.."

card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' || true)
[ -n "$card" ] || { echo "[gpu bench] no NVIDIA GPU found (nvidia-smi); run make bench instead" >&2; exit 1; }
# Vulkan for WebGPU (Dawn), ANGLE on Vulkan, and no GPU blocklist: what makes headless Chromium use the card.
export SEAM_BENCH_CHROMIUM_FLAGS="--enable-features=Vulkan --use-vulkan=native --use-angle=vulkan --ignore-gpu-blocklist --enable-gpu"
echo "[gpu bench] $card; Chromium flags: $SEAM_BENCH_CHROMIUM_FLAGS"
.venv/bin/python -m bench --engines browser-software,browser-gpu,transformers.js-webgpu,transformers.js-wasm,wllama --out "bench/results/gpu-$card" "$@"

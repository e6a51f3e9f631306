# Seam: the two commands a newcomer needs are `make run` and `make test` (see README.md).
PY := .venv/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup build-model serve bench

run: build-model  ## set up, build the default model, serve the chat page on http://$(HOST):$(PORT)
	$(MAKE) --no-print-directory serve

test: setup  ## set up, then run the whole test suite: the page's pure JS modules under node, then pytest
	node --test tests/js/
	$(PY) -m pytest $(PYTEST_ARGS)

setup:  ## install system packages, .venv, npm packages, and TVM's web runtime (skips what is done)
	@bash tools/setup.sh

build-model: setup  ## MODEL=path/to.gguf|hf-folder QUANT=q4f32_1,q4f16_1 (defaults: SmolLM2-135M-Instruct, both)
	$(PY) -m modelbuild build $(if $(MODEL),--model "$(MODEL)") $(if $(QUANT),--quant "$(QUANT)")

serve:  ## serve what is built under waitress (python -m router): SEAM_MAX_QUEUE chats at once, see README
	$(PY) -m router --host $(HOST) --port $(PORT)

bench: build-model  ## speed of the server and browser engines, interleaved (BENCH_ARGS="--repeats 3"); see bench/
	$(PY) -m bench $(BENCH_ARGS)

"""The real default model (SmolLM2-135M-Instruct) as `make build-model` builds it: the catalog contract,
and the CPU library's greedy tokens against a numpy forward pass over the same dequantized weights."""
import json

import jsonschema
import numpy as np
import pytest
import tvm
from tokenizers import Tokenizer

from modelbuild import chat, quality, selfcheck
from modelbuild.arch.llama import LlamaConfig
from modelbuild.convert import verify_tensor_cache
from modelbuild.manifest import SCHEMA_PATH
from modelbuild.quantization import get_preset
from modelbuild.reference import NumpyLlama, dequantized_weights
from modelrun.chat import ChatTemplate
from modelrun.model import Model, load_tensor_cache

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Is 17 a prime number?"}],
    [{"role": "user", "content": "List three colours of the rainbow."}],
]
NEW_TOKENS = 24
REAL = "SmolLM2-135M-Instruct"
PPL_TOKENS = 64  # of the README's quality text (its table: 256; the f16 CPU library takes 20 s for those)


@pytest.fixture(scope="module")
def catalog(default_built):
    return json.loads((default_built / "manifest.json").read_text())


def test_catalog_follows_its_schema_and_lists_real_files(catalog, default_built):
    jsonschema.validate(catalog, json.loads(SCHEMA_PATH.read_text()))
    assert {m["id"] for m in catalog["models"]} >= {"SmolLM2-135M-Instruct-q4f32_1", "SmolLM2-135M-Instruct-q4f16_1"}
    for entry in catalog["models"]:
        folder = default_built / entry["path"]
        verify_tensor_cache(folder)
        index = json.loads((folder / "tensor-cache.json").read_text())
        shard_bytes = sum(s["nbytes"] for s in index["records"])
        other = sum((folder / entry["files"][k]).stat().st_size for k in ("config", "tokenizer"))
        other += max((folder / entry["files"][kernels["file"]]).stat().st_size for kernels in entry["kernels"].values())
        assert entry["download_bytes"] == shard_bytes + other
        assert entry["requirements"]["features"] == (["shader-f16"] if entry["quantization"] == "q4f16_1" else [])
        assert entry["requirements"]["estimated_gpu_memory_bytes"] > shard_bytes


def load(default_built, model_id):
    folder = default_built / model_id
    config = json.loads((folder / "mlc-chat-config.json").read_text())
    runner = Model(folder / f"{model_id}-cpu.so", folder / "tensor-cache.json", config)
    params = load_tensor_cache(folder / "tensor-cache.json", tvm.cpu())
    preset = get_preset(config["quantization"])
    reference = NumpyLlama(LlamaConfig.from_dict(config["model_config"]),
                           dequantized_weights({k: v.numpy() for k, v in params.items()}))
    return config, runner, reference


@pytest.mark.parametrize("model_id", ["SmolLM2-135M-Instruct-q4f32_1", "SmolLM2-135M-Instruct-q4f16_1"])
def test_cpu_greedy_tokens_equal_the_numpy_reference(default_built, model_id):
    config, runner, reference = load(default_built, model_id)
    tokenizer_json = (default_built / model_id / "tokenizer.json").read_text()
    for messages in PROMPTS:
        prompt = chat.encode_chat(tokenizer_json, ChatTemplate.of_model(config), messages)
        ours, _ = runner.greedy(prompt, NEW_TOKENS, config["stop_token_ids"])
        theirs, logits = reference.greedy(prompt, NEW_TOKENS, config["stop_token_ids"])
        selfcheck.compare_greedy(ours, theirs, logits, get_preset(config["quantization"]).model_dtype)


def test_golden_tokens_reproduce(catalog, default_built):
    for entry in catalog["models"]:
        config, runner, _ = load(default_built, entry["id"])
        check = entry["self_check"]
        tokens, _ = runner.greedy(check["prompt_token_ids"], check["max_tokens"], config["stop_token_ids"])
        assert tokens == check["golden_token_ids"]


def test_the_f16_preset_keeps_the_sources_perplexity(default_built):
    """q4f16_1's compiled CPU library, over the start of the README's quality text, within 1% of the
    perplexity of the source's own weights in float64 numpy (q4f32_1 holds them bit for bit,
    test_transcode.py, and its CPU library gives numpy's tokens, above). Over 256 tokens (the README's
    table): 17.749 (source and q4f32_1), 17.748 (q4f16_1); the old symmetric format scored 29.7."""
    text = quality.TEXT.read_text()
    _, _, reference = load(default_built, f"{REAL}-q4f32_1")
    ids = Tokenizer.from_file(str(default_built / f"{REAL}-q4f32_1" / "tokenizer.json")).encode(text).ids[:PPL_TOKENS]
    reference.reset()
    logits = reference.forward(ids[:-1])
    logits -= logits.max(-1, keepdims=True)
    nll = -(logits[np.arange(len(ids) - 1), ids[1:]] - np.log(np.exp(logits).sum(-1)))
    source = float(np.exp(nll.mean()))
    compiled, _ = quality.perplexity(default_built / f"{REAL}-q4f16_1", text, PPL_TOKENS)
    assert abs(compiled / source - 1) < 0.01, f"q4f16_1: perplexity {compiled:.3f}, the source's {source:.3f}"

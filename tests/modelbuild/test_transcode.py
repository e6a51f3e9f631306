"""The 4-bit format against its sources: GGUF blocks transcoded bit for bit, float weights quantized with
a minimum (closer to the float model than the symmetric grid it replaced), damaged blocks refused by name,
types the format cannot hold said so in the build output."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tvm
from gguf import GGMLQuantizationType, GGUFReader, quants

from modelbuild import source
from modelbuild.arch.llama import LlamaConfig
from modelbuild.blocks import from_gguf
from modelbuild.quantization.group_quant import pack, quantize_with_min, unpack
from modelbuild.reference import NumpyLlama, dequantized_weights
from modelrun.model import load_tensor_cache

TYPES = ("Q4_0", "Q4_1", "Q8_0")


def gguf_bytes(w: np.ndarray, kind: str) -> np.ndarray:
    return quants.quantize(w, GGMLQuantizationType[kind])


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("dtype", ("float32", "float16"))
def test_gguf_blocks_transcode_bit_for_bit(kind, dtype):
    w = np.random.default_rng(1).standard_normal((48, 96)).astype(np.float32) * 0.05
    raw = gguf_bytes(w, kind)
    blocks = from_gguf(kind, raw, *w.shape)
    arrays = pack(blocks, dtype)
    # The same weights as llama.cpp's own dequantization, exactly: nothing re-quantized.
    assert np.array_equal(unpack(arrays, blocks.bits).astype(np.float32),
                          quants.dequantize(raw, GGMLQuantizationType[kind]).reshape(w.shape))
    # The scales are llama.cpp's float16 bits (widened exactly for float32).
    scale_bits = raw.reshape(48, 3, -1)[..., :2].copy().view(np.float16)[..., 0]
    assert np.array_equal(arrays["q_scale"].T.astype(np.float16).view(np.uint16), scale_bits.view(np.uint16))


@pytest.mark.parametrize("kind", TYPES)
def test_blocks_of_the_wrong_size_or_without_finite_scales_are_refused(kind):
    raw = gguf_bytes(np.ones((4, 64), np.float32), kind)
    with pytest.raises(ValueError, match="bytes"):
        from_gguf(kind, raw.reshape(-1)[:-1], 4, 64)
    raw = raw.copy()
    raw[2, :2] = 0xFF  # an f16 NaN scale in one block
    with pytest.raises(ValueError, match="1 of its"):
        from_gguf(kind, raw, 4, 64)


def test_the_default_models_4_bit_presets_hold_the_gguf_weights_exactly(default_built):
    """The built artifacts, not just the packer: every q4 variant's weights equal the GGUF's own."""
    reader = GGUFReader(source.default_model_path())
    tensors = {t.name: t for t in reader.tensors}
    down = tensors["blk.3.ffn_down.weight"]
    want = quants.dequantize(down.data, down.tensor_type).reshape(list(reversed(down.shape.tolist())))
    embed = tensors["token_embd.weight"]
    want_embed = quants.dequantize(embed.data, embed.tensor_type)
    for preset in ("q4f32_1", "q4f16_1"):
        params = load_tensor_cache(default_built / f"SmolLM2-135M-Instruct-{preset}" / "tensor-cache.json", tvm.cpu())
        wanted = ("model.layers.3.mlp.down_proj", "model.embed_tokens")
        weights = dequantized_weights({k: v.numpy() for k, v in params.items() if k.startswith(wanted)})
        assert np.array_equal(weights["model.layers.3.mlp.down_proj.weight"].astype(np.float32), want), preset
        # The Q8_0 embedding stays 8 bits: any 4-bit grid would cost perplexity the source does not have.
        assert params["model.embed_tokens.q_weight"].numpy().shape[0] == want_embed.shape[1] // 4, preset
        assert np.array_equal(weights["model.embed_tokens.weight"].astype(np.float32), want_embed), preset


def symmetric_4bit(w: np.ndarray) -> np.ndarray:
    """The format the presets used before: scale = max|w| / 7 per group of 32, codes round(w / scale)."""
    groups = w.reshape(-1, 32)
    scale = np.abs(groups).max(1, keepdims=True) / 7
    codes = np.clip(np.round(groups / np.where(scale == 0, 1, scale)), -7, 7)
    return (codes * scale).reshape(w.shape)


def test_float_weights_quantized_with_a_minimum_beat_the_symmetric_grid(tiny_built):
    """On the tiny model's float weights, the logits of the built q4f32_1 are closer to the float model's
    than those of the same weights on the old symmetric grid."""
    source_dir, built = tiny_built
    config = json.loads((built / "tiny-llama-q0f32" / "mlc-chat-config.json").read_text())
    floats = load_tensor_cache(built / "tiny-llama-q0f32" / "tensor-cache.json", tvm.cpu())
    floats = {k: v.numpy() for k, v in floats.items()}
    params = load_tensor_cache(built / "tiny-llama-q4f32_1" / "tensor-cache.json", tvm.cpu())
    quantized = dequantized_weights({k: v.numpy() for k, v in params.items()})
    symmetric = {k: symmetric_4bit(v) if v.ndim == 2 else v for k, v in floats.items()}
    prompt = [int(i) for i in np.random.default_rng(3).integers(3, 49152, size=24)]

    def logits(weights):
        return NumpyLlama(LlamaConfig.from_dict(config["model_config"]), weights).forward(prompt)

    want = logits(floats)
    error = {name: np.abs(logits(w) - want).max() for name, w in (("min", quantized), ("symmetric", symmetric))}
    print(f"max logit error vs float: with a minimum {error['min']:.4g}, symmetric {error['symmetric']:.4g}")
    assert error["min"] < 0.8 * error["symmetric"], error
    # The weights themselves, too: the minimum lowers every weight matrix's squared error.
    for name, w in floats.items():
        if w.ndim == 2:
            assert (np.square(quantized[name] - w).sum() < np.square(symmetric[name] - w).sum()), name
    # And what the artifact holds is what the quantizer chose (nothing else touched the float source).
    assert np.array_equal(unpack(pack(quantize_with_min(floats["lm_head.weight"], "float32"), "float32"), 4),
                          quantized["lm_head.weight"])


def build(*args):
    proc = subprocess.run([sys.executable, "-m", "modelbuild", "build", *map(str, args)], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def patched_gguf(tmp_path, name: str, patch) -> "Path":  # noqa: F821
    """A copy of the default GGUF with one tensor's header or blocks changed in place."""
    copy = tmp_path / source.default_model_path().name
    shutil.copyfile(source.default_model_path(), copy)
    reader = GGUFReader(copy, "r+")
    patch(next(t for t in reader.tensors if t.name == name))
    reader.data.flush()
    return copy


def test_a_gguf_with_damaged_blocks_is_refused_naming_the_tensor(tmp_path):
    def nan_scale(tensor):
        tensor.data.reshape(-1, 20)[7, :2] = 0xFF  # block 7's f16 scale: NaN

    gguf = patched_gguf(tmp_path, "blk.0.attn_v.weight", nan_scale)
    code, _, stderr = build("--model", gguf, "--out", tmp_path / "out", "--quant", "q4f32_1")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "blk.0.attn_v.weight" in errors[0] and "Q4_1" in errors[0], stderr
    assert "download or copy it again" in stderr and not (tmp_path / "out" / "manifest.json").exists()


def test_a_k_quant_tensor_is_requantized_with_a_line_saying_so(tmp_path, capsys):
    """A type the format cannot hold exactly (here the header says Q4_K) is dequantized, and the build says so."""
    def as_q4_k(tensor):
        tensor.field.parts[4][0] = GGMLQuantizationType.Q4_K  # the header now says Q4_K ...
        blocks = tensor.data.reshape(-1)[:576 * 1536 // 256 * 144].reshape(-1, 144)
        blocks[:, :4] = np.array([0.01, 0.001], np.float16).view(np.uint8)  # ... and the blocks are (d, dmin)

    gguf = patched_gguf(tmp_path, "blk.0.ffn_down.weight", as_q4_k)
    tensors = dict(source.open_source(gguf).read_tensors())
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[build]")]
    assert line == [f"[build] 1 tensors of {gguf.name} are Q4_K, which the 4-bit format cannot hold exactly: "
                    "dequantized, and quantized again where a preset wants 4 bits"]
    down = tensors["model.layers.0.mlp.down_proj.weight"]
    assert isinstance(down, np.ndarray) and down.shape == (576, 1536) and np.isfinite(down).all()

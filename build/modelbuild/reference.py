"""A plain numpy forward pass of the Llama-shaped decoder (with Qwen2's biases, Qwen3's q/k norms, Llama 3's
RoPE scaling): the reference the compiled libraries are checked against.

It takes the same parameters the compiled model takes (after quantization it dequantizes them),
keeps its own KV cache so greedy decoding costs one token per step, and computes in float64 so that
its own rounding is negligible next to the compiled model's.
"""
from __future__ import annotations

import numpy as np

from modelbuild.arch.llama import LlamaConfig
from modelbuild.quantization.group_quant import unpack
from modelbuild.selfcheck import greedy_decode


def dequantized_weights(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Parameter arrays (quantized or not) -> float64 weights under the float model's names. A quantized
    weight has a minimum in 4 bits and none in 8 (group_quant.py)."""
    out = {}
    for name, value in params.items():
        if name.endswith(".q_weight"):
            base = name.removesuffix(".q_weight")
            arrays = {s: params[f"{base}.{s}"] for s in ("q_weight", "q_scale", "q_min") if f"{base}.{s}" in params}
            out[base + ".weight"] = unpack(arrays, 4 if "q_min" in arrays else 8)
        elif not name.endswith((".q_scale", ".q_min")):
            out[name] = value.astype(np.float64)
    return out


class NumpyLlama:
    def __init__(self, c: LlamaConfig, weights: dict[str, np.ndarray]):
        self.c, self.w = c, weights
        self.lm_head = weights["model.embed_tokens.weight"] if c.tie_word_embeddings else weights["lm_head.weight"]
        self.reset()

    def reset(self) -> None:
        self.keys = [np.zeros((0, self.c.num_key_value_heads, self.c.head_dim)) for _ in range(self.c.num_hidden_layers)]
        self.values = [k.copy() for k in self.keys]

    def _rms(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.c.rms_norm_eps) * self.w[name]

    def _rope(self, x, positions):  # x (T, heads, D), Hugging Face "rotate_half" layout
        d = self.c.head_dim
        angles = np.outer(positions, rope_frequencies(d, self.c.rope_theta, self.c.rope_scaling))
        cos = np.cos(np.concatenate([angles, angles], -1))[:, None]
        sin = np.sin(np.concatenate([angles, angles], -1))[:, None]
        rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
        return x * cos + rotated * sin

    def forward(self, token_ids: list[int]) -> np.ndarray:
        """Append tokens to the sequence; return the logits at every new position, (T, vocab)."""
        c, w = self.c, self.w
        start, t = self.keys[0].shape[0], len(token_ids)
        positions = np.arange(start, start + t)
        nh, nkv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        x = w["model.embed_tokens.weight"][token_ids]  # (T, hidden)
        causal = np.triu(np.full((t, start + t), -np.inf), start + 1)
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            qkv = self._rms(x, p + "input_layernorm.weight") @ w[p + "self_attn.qkv_proj.weight"].T
            qkv = (qkv + w.get(p + "self_attn.qkv_proj.bias", 0)).reshape(t, nh + 2 * nkv, d)
            q, k, v = qkv[:, :nh], qkv[:, nh:nh + nkv], qkv[:, nh + nkv:]
            if c.qk_norm:
                q, k = self._rms(q, p + "self_attn.q_norm.weight"), self._rms(k, p + "self_attn.k_norm.weight")
            q, k = self._rope(q, positions), self._rope(k, positions)
            self.keys[i] = np.concatenate([self.keys[i], k])
            self.values[i] = np.concatenate([self.values[i], v])
            keys = np.repeat(self.keys[i], nh // nkv, axis=1)  # (S, H, D)
            values = np.repeat(self.values[i], nh // nkv, axis=1)
            scores = np.einsum("thd,shd->hts", q, keys) / np.sqrt(d) + causal
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attn = np.einsum("hts,shd->thd", scores, values).reshape(t, nh * d)
            x = x + attn @ w[p + "self_attn.o_proj.weight"].T
            gate, up = np.split(self._rms(x, p + "post_attention_layernorm.weight") @ w[p + "mlp.gate_up_proj.weight"].T, 2, -1)
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
        return self._rms(x, "model.norm.weight") @ self.lm_head.T

    def greedy(self, prompt_ids: list[int], max_new_tokens: int, stop_ids=()) -> tuple[list[int], list[np.ndarray]]:
        """Greedy continuation; also returns the logits each choice was made from."""
        self.reset()
        return greedy_decode(lambda ids: self.forward(ids)[-1], lambda token: self.forward([token])[-1],
                             prompt_ids, max_new_tokens, stop_ids)


def rope_frequencies(d: int, theta: float, scaling: dict | None) -> np.ndarray:
    """RoPE's inverse frequencies, with Llama 3.1's scaling as Hugging Face computes it."""
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    if not scaling:
        return inv
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    wavelength = 2 * np.pi / inv
    smooth = (old / wavelength - low) / (high - low)
    medium = (1 - smooth) * inv / factor + smooth * inv
    return np.where(wavelength > old / low, inv / factor, np.where(wavelength < old / high, inv, medium))


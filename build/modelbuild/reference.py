"""A plain numpy forward pass of the Llama-shaped decoder (with Qwen2's biases, Qwen3's q/k norms, Llama 3's
and Phi-3's RoPE scaling): the reference the compiled libraries are checked against.

It takes the same parameters the compiled model takes (after quantization it dequantizes them),
keeps its own KV cache so greedy decoding costs one token per step, and computes in float64 so that
its own rounding is negligible next to the compiled model's.
"""
from __future__ import annotations

import numpy as np

from modelbuild.arch.llama import LlamaConfig
from modelbuild.quantization.group_quant import unpack
from modelrun.model import greedy_decode


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

    def _rope(self, x, positions, layer: int):  # x (T, heads, D), Hugging Face "rotate_half" layout
        inverse, factor = self.c.layer_rope(layer)
        return rotate_half(x, np.outer(positions, inverse), factor)

    def forward(self, token_ids: list[int]) -> np.ndarray:
        """Append tokens to the sequence; return the logits at every new position, (T, vocab)."""
        start, t = self.keys[0].shape[0], len(token_ids)
        positions = np.arange(start, start + t)
        causal = np.triu(np.full((t, start + t), -np.inf), start + 1)
        x = self._embed(token_ids)  # (T, hidden)
        for i in range(self.c.num_hidden_layers):
            x = self._layer(i, f"model.layers.{i}.", x, positions, causal)
        return self._logits(self._rms(x, "model.norm.weight"))

    def _embed(self, token_ids: list[int]) -> np.ndarray:
        return self.w["model.embed_tokens.weight"][token_ids]

    def _layer(self, i: int, p: str, x, positions, causal):
        x = x + self._attention(i, p, self._rms(x, p + "input_layernorm.weight"), positions, causal)
        return x + self._mlp(p, self._rms(x, p + "post_attention_layernorm.weight"))

    def _attention(self, i: int, p: str, h, positions, causal):
        c, w, t = self.c, self.w, h.shape[0]
        nh, nkv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        qkv = h @ w[p + "self_attn.qkv_proj.weight"].T
        qkv = (qkv + w.get(p + "self_attn.qkv_proj.bias", 0)).reshape(t, nh + 2 * nkv, d)
        q, k, v = qkv[:, :nh], qkv[:, nh:nh + nkv], qkv[:, nh + nkv:]
        if c.qk_norm:
            q, k = self._rms(q, p + "self_attn.q_norm.weight"), self._rms(k, p + "self_attn.k_norm.weight")
        q, k = self._rope(q, positions, i), self._rope(k, positions, i)
        self.keys[i] = np.concatenate([self.keys[i], k])
        self.values[i] = np.concatenate([self.values[i], v])
        keys = np.repeat(self.keys[i], nh // nkv, axis=1)  # (S, H, D)
        values = np.repeat(self.values[i], nh // nkv, axis=1)
        scores = np.einsum("thd,shd->hts", q, keys) * self._score_scale() + causal
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        return np.einsum("hts,shd->thd", scores, values).reshape(t, nh * d) @ w[p + "self_attn.o_proj.weight"].T

    def _score_scale(self) -> float:
        return self.c.head_dim ** -0.5

    def _mlp(self, p: str, h):
        gate, up = np.split(h @ self.w[p + "mlp.gate_up_proj.weight"].T, 2, -1)
        return (self._activation(gate) * up) @ self.w[p + "mlp.down_proj.weight"].T

    def _activation(self, gate):
        return gate / (1 + np.exp(-gate))  # SiLU

    def _logits(self, h):
        return h @ self.lm_head.T

    def greedy(self, prompt_ids: list[int], max_new_tokens: int, stop_ids=()) -> tuple[list[int], list[np.ndarray]]:
        """Greedy continuation; also returns the logits each choice was made from."""
        self.reset()
        return greedy_decode(lambda ids: self.forward(ids)[-1], lambda token: self.forward([token])[-1],
                             prompt_ids, max_new_tokens, stop_ids)


class NumpyGemma(NumpyLlama):
    """Gemma 2 and 3 (arch/gemma.py): scaled embeddings, norms around attention and around the MLP, GeGLU,
    each layer's own RoPE, query_pre_attn_scalar, Gemma 2's soft-capped logits. The loader has added one to
    every norm weight, as the compiled model takes them."""

    def _embed(self, token_ids):
        return super()._embed(token_ids) * np.sqrt(self.c.hidden_size)

    def _layer(self, i: int, p: str, x, positions, causal):
        attention = self._attention(i, p, self._rms(x, p + "input_layernorm.weight"), positions, causal)
        x = x + self._rms(attention, p + "post_attention_layernorm.weight")
        mlp = self._mlp(p, self._rms(x, p + "pre_feedforward_layernorm.weight"))
        return x + self._rms(mlp, p + "post_feedforward_layernorm.weight")

    def _score_scale(self) -> float:
        return self.c.query_pre_attn_scalar ** -0.5

    def _activation(self, gate):
        return 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate ** 3)))

    def _logits(self, h):
        logits, cap = super()._logits(h), self.c.final_logit_softcapping
        return cap * np.tanh(logits / cap) if cap else logits


def rotate_half(x, angles, factor: float):
    """RoPE of x (T, heads, D) at these angles (T, D/2), in Hugging Face's rotate_half layout."""
    d = x.shape[-1]
    cos = factor * np.cos(np.concatenate([angles, angles], -1))[:, None]
    sin = factor * np.sin(np.concatenate([angles, angles], -1))[:, None]
    return x * cos + np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1) * sin

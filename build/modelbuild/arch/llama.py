"""Llama-family decoder (Llama 2/3, SmolLM, TinyLlama, Mistral, Qwen2/2.5, Qwen3, Phi-3) in `tvm.relax.frontend.nn`,
all of it in this file; what a family differs in is a field of LlamaConfig, which families.py (in this
folder) reads from the family's config.json.

Modules are named after Hugging Face's, except the fused projections (`qkv_proj`, `gate_up_proj`),
which save a kernel launch each. Attention and RoPE run inside TVM's paged KV cache, whose TIR kernels
are generated for the target (WebGPU or CPU). Entry points, all taking the parameters packed in one tuple:
  embed(input_ids)            (seq,) int32            -> (1, seq, hidden)
  prefill(embeddings, cache)  (1, seq, hidden)        -> logits of the last position (1, 1, vocab) float32
  decode(embeddings, cache)   (1, 1, hidden)          -> logits (1, 1, vocab) float32
  create_tir_paged_kv_cache(max_batch, max_total_seq_len, prefill_chunk_size, page_size, sliding_window)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import relax as rx
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op, spec
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache


@dataclass
class LlamaConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    context_window_size: int = 0   # 0: min(max_position_embeddings, 4096); KV memory grows with it
    prefill_chunk_size: int = 0    # 0: min(context window, 512); the largest prefill a kernel call sees
    head_dim: int = 0              # 0: hidden_size / num_attention_heads
    attention_bias: bool = False   # q, k and v projections with biases (Qwen2)
    qk_norm: bool = False          # an RMSNorm over each head's q and k before RoPE (Qwen3)
    rope_scaling: dict[str, Any] | None = None  # Llama 3.1's {"rope_type": "llama3", ...}, Phi-3's longrope
    kwargs: dict[str, Any] = field(default_factory=dict)  # keys of config.json we do not use

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        self.context_window_size = self.context_window_size or min(self.max_position_embeddings, 4096)
        self.prefill_chunk_size = self.prefill_chunk_size or min(self.context_window_size, 512)

    @classmethod
    def from_dict(cls, source: dict[str, Any]) -> "LlamaConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"kwargs"}
        known = {k: v for k, v in source.items() if k in names}
        if known.get("head_dim") is None:
            known.pop("head_dim", None)
        return cls(**known, kwargs={k: v for k, v in source.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "kwargs"}

    def layer_rope(self, layer_id: int) -> tuple[np.ndarray, float]:
        """The RoPE of one layer: (inverse frequencies, factor on cos and sin)."""
        return rope_frequencies(self.head_dim, self.rope_theta, self.rope_scaling)

    def rope_in_graph(self) -> bool:
        """Whether the layers rotate q and k themselves: TVM 0.27's LongRoPE kernel does not parse."""
        return (self.rope_scaling or {}).get("rope_type") == "longrope"


def rope_frequencies(d: int, theta: float, scaling: dict | None) -> tuple[np.ndarray, float]:
    """RoPE's inverse frequencies and the factor on its cos and sin, as Hugging Face computes them: plain,
    Llama 3.1's scaling, and Phi-3's LongRoPE within its original context (the short factors)."""
    inverse = 1.0 / theta ** (np.arange(0, d, 2) / d)
    kind = (scaling or {}).get("rope_type")
    if kind == "longrope":
        original = scaling["original_max_position_embeddings"]
        ratio = scaling["max_position_embeddings"] / original
        return inverse / np.array(scaling["short_factor"]), \
            float(np.sqrt(1 + np.log(ratio) / np.log(original))) if ratio > 1 else 1.0
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelength = 2 * np.pi / inverse
        smooth = (old / wavelength - low) / (high - low)
        medium = (1 - smooth) * inverse / factor + smooth * inverse
        inverse = np.where(wavelength > old / low, inverse / factor,
                           np.where(wavelength < old / high, inverse, medium))
    return inverse, 1.0


def rotate(x: nn.Tensor, positions: nn.Tensor, inverse: np.ndarray, factor: float) -> nn.Tensor:
    """RoPE over (1, seq, heads, head_dim) at the cache's positions, in Hugging Face's rotate_half layout,
    computed in float32 as it computes it: for RoPE the KV cache cannot apply (arch/gemma.py's per-layer
    bases, LongRoPE: TVM 0.27's LongRoPE kernel does not parse)."""
    half = x.shape[3] // 2

    def compute(x, positions, inverse):
        def element(b, s, h, i):
            angle = positions[s].astype("float32") * inverse[i % half]
            pair = tirx.if_then_else(i < half, -x[b, s, h, i + half], x[b, s, h, i - half])
            return (factor * (tirx.cos(angle) * x[b, s, h, i].astype("float32") +
                              tirx.sin(angle) * pair.astype("float32"))).astype(x.dtype)
        return te.compute(x.shape, element, name="rope")
    table = nn.Tensor.from_const(np.asarray(inverse, dtype="float32"))
    return op.tensor_expr_op(compute, "rope", [x, positions, table])


class LlamaAttention(nn.Module):
    """`rope`: (inverse frequencies, factor) to rotate q and k with here, or None where the KV cache does it."""

    def __init__(self, c: LlamaConfig, rope: tuple[np.ndarray, float] | None = None, sm_scale: float = 0.0):
        self.c, self.rope = c, rope
        self.sm_scale = sm_scale or c.head_dim ** -0.5
        self.qkv_proj = nn.Linear(c.hidden_size, (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim,
                                  bias=c.attention_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)
        if c.qk_norm:
            self.q_norm = nn.RMSNorm(c.head_dim, -1, c.rms_norm_eps, bias=False)
            self.k_norm = nn.RMSNorm(c.head_dim, -1, c.rms_norm_eps, bias=False)

    def forward(self, x: nn.Tensor, cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        c = self.c
        b, s, _ = x.shape
        heads = c.num_attention_heads + 2 * c.num_key_value_heads
        qkv = op.reshape(self.qkv_proj(x), (b, s, heads, c.head_dim))  # (B, T, H + 2 KV, D)
        if c.qk_norm or self.rope:  # the norms come before RoPE
            q, k, v = op.split(qkv, [c.num_attention_heads, c.num_attention_heads + c.num_key_value_heads], axis=2)
            if c.qk_norm:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.rope:
                positions = cache.get_query_positions(b * s)
                q, k = (rotate(t, positions, *self.rope) for t in (q, k))
            qkv = op.concat([q, k, v], dim=2)
        out = cache.attention_with_fused_qkv(layer_id, qkv, c.num_attention_heads, sm_scale=self.sm_scale)
        return self.o_proj(op.reshape(out, (b, s, c.num_attention_heads * c.head_dim)))


class LlamaMLP(nn.Module):
    activation = staticmethod(op.silu)  # SwiGLU

    def __init__(self, c: LlamaConfig):
        self.gate_up_proj = nn.Linear(c.hidden_size, 2 * c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(self.activation(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c: LlamaConfig, layer_id: int):
        self.input_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False)
        self.self_attn = LlamaAttention(c, c.layer_rope(layer_id) if c.rope_in_graph() else None)
        self.post_attention_layernorm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False)
        self.mlp = LlamaMLP(c)

    def forward(self, x: nn.Tensor, cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    layer = LlamaDecoderLayer

    def __init__(self, c: LlamaConfig):
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([self.layer(c, i) for i in range(c.num_hidden_layers)])
        self.norm = nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False)

    def forward(self, x: nn.Tensor, cache: PagedKVCache) -> nn.Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, cache, layer_id)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    body = LlamaModel

    def __init__(self, c: LlamaConfig, target):
        self.c = c
        self.target = target  # the KV cache generates its attention kernels for it
        self.model = self.body(c)
        if not c.tie_word_embeddings:
            self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.dtype = "float32"  # nn.Module.to() updates it

    def _logits(self, hidden: nn.Tensor) -> nn.Tensor:
        embed = self.model.embed_tokens
        if self.c.tie_word_embeddings and hasattr(embed, "lm_head_forward"):  # quantized table
            logits = embed.lm_head_forward(hidden)
        elif self.c.tie_word_embeddings:
            logits = op.matmul(hidden, op.permute_dims(embed.weight))
        else:
            logits = self.lm_head(hidden)
        return logits.astype("float32") if logits.dtype != "float32" else logits

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        embeds = self.model.embed_tokens(input_ids)  # (T, hidden)
        return op.reshape(embeds, (1, input_ids.shape[0], self.c.hidden_size))

    def prefill(self, embeddings: nn.Tensor, cache: PagedKVCache):
        hidden = self.model(embeddings, cache)  # (1, T, hidden)
        # Only the last position's logits are needed to continue: skip T-1 rows of the vocab matmul.
        last = op.tensor_expr_op(lambda h: te.compute((1, 1, h.shape[2]), lambda b, i, d: h[b, h.shape[1] - 1, d],
                                                      name="last_position"), "last_position", [hidden])
        return self._logits(last), cache

    def decode(self, embeddings: nn.Tensor, cache: PagedKVCache):
        return self._logits(self.model(embeddings, cache)), cache

    def create_tir_paged_kv_cache(self, max_batch_size: tirx.Var, max_total_seq_len: tirx.Var,
                                  prefill_chunk_size: tirx.Var, page_size: tirx.Var,
                                  support_sliding_window: tirx.Var) -> PagedKVCache:
        c = self.c
        in_graph = c.rope_in_graph()  # then the cache applies no RoPE
        return TIRPagedKVCache(
            attn_kind="mha", max_batch_size=max_batch_size, max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size, page_size=page_size, support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, c.num_hidden_layers]), num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
            qk_head_dim=c.head_dim, v_head_dim=c.head_dim, mla_original_qk_head_dim=0, mla_original_v_head_dim=0,
            rope_mode=RopeMode.NONE if in_graph else RopeMode.NORMAL, rope_scale=1, rope_theta=c.rope_theta,
            rope_scaling={} if in_graph else c.rope_scaling or {}, rope_ext_factors=rx.prim_value(0),
            rotary_dim=c.head_dim, enable_disaggregation=False,
            dtype=self.dtype, target=self.target)

    def get_default_spec(self):
        packed = {"param_mode": "packed", "effect_mode": "none"}
        hidden = self.c.hidden_size
        return nn.spec.ModuleSpec.from_raw({
            "embed": {"input_ids": spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {"embeddings": spec.Tensor([1, "seq_len", hidden], self.dtype),
                        "cache": spec.Object(object_type=PagedKVCache), "$": packed},
            "decode": {"embeddings": spec.Tensor([1, 1, hidden], self.dtype),
                       "cache": spec.Object(object_type=PagedKVCache), "$": packed},
            "create_tir_paged_kv_cache": {"max_batch_size": int, "max_total_seq_len": int, "prefill_chunk_size": int,
                                          "page_size": int, "support_sliding_window": int,
                                          "$": {"param_mode": "none", "effect_mode": "none"}},
        }, self)

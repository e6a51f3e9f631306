"""Gemma 2 and 3: the Llama decoder (llama.py) with what Gemma changes, and only that.

- the embeddings are scaled by sqrt(hidden_size);
- RMSNorms multiply by (1 + w): the loader adds the 1 to the weights once, so the norms are Llama's;
- four norms per layer: around attention and around the MLP, each before the residual add;
- GeGLU (tanh-approximated GELU) instead of SwiGLU; attention scaled by query_pre_attn_scalar^-1/2;
- RoPE per layer: Gemma 3's local (sliding) and global layers have their own base (and the global ones a
  linear scaling), which one KV cache cannot apply, so the cache applies none and each layer rotates its own
  q and k (llama.py's `rotate`), at the positions the cache reports;
- Gemma 2's final logits are soft-capped: cap * tanh(logits / cap).
Local layers attend within a sliding window; families.py caps the context at that window, so every layer's
attention is plain causal attention over the whole context.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from modelbuild.arch import llama_loader
from modelbuild.arch.llama import LlamaAttention, LlamaConfig, LlamaForCausalLM, LlamaMLP, LlamaModel


@dataclass
class GemmaConfig(LlamaConfig):
    query_pre_attn_scalar: float = 0.0            # attention scores are scaled by its -1/2 power
    final_logit_softcapping: float | None = None  # Gemma 2: 30.0
    rope_per_layer: list[list[float]] = field(default_factory=list)  # per layer: [base, linear scaling factor]

    def layer_rope(self, layer_id: int) -> tuple[np.ndarray, float]:
        base, factor = self.rope_per_layer[layer_id]
        return 1.0 / (factor * base ** (np.arange(0, self.head_dim, 2) / self.head_dim)), 1.0

    def rope_in_graph(self) -> bool:
        return True


class GemmaMLP(LlamaMLP):
    activation = staticmethod(lambda gate: op.gelu(gate, approximate="tanh"))  # GeGLU


class GemmaDecoderLayer(nn.Module):
    def __init__(self, c: GemmaConfig, layer_id: int):
        norm = lambda: nn.RMSNorm(c.hidden_size, -1, c.rms_norm_eps, bias=False)  # noqa: E731
        self.input_layernorm, self.post_attention_layernorm = norm(), norm()
        self.pre_feedforward_layernorm, self.post_feedforward_layernorm = norm(), norm()
        self.self_attn = LlamaAttention(c, c.layer_rope(layer_id), c.query_pre_attn_scalar ** -0.5)
        self.mlp = GemmaMLP(c)

    def forward(self, x: nn.Tensor, cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cache, layer_id))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class GemmaModel(LlamaModel):
    layer = GemmaDecoderLayer


class GemmaForCausalLM(LlamaForCausalLM):
    body = GemmaModel

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return super().embed(input_ids) * (self.c.hidden_size ** 0.5)

    def _logits(self, hidden: nn.Tensor) -> nn.Tensor:
        logits, cap = super()._logits(hidden), self.c.final_logit_softcapping
        if not cap:
            return logits
        # A kernel of its own (opaque to operator fusion): fused into the vocabulary matmul, the 4-bit WebGPU
        # schedule leaves an intermediate buffer in global scope, which WebGPU cannot declare.
        capped = lambda x: te.compute(x.shape, lambda *i: tirx.tanh(x(*i) / cap) * cap, name="softcap")  # noqa: E731
        return op.tensor_expr_op(capped, "softcap", [logits], attrs={"op_pattern": 8})


def load_params(tensors, c: GemmaConfig):
    """Llama's names (llama_loader.py, with the two extra norms), and every norm's weight plus one."""
    norms = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")
    for name, weight in llama_loader.load_params(tensors, c, norms):
        yield name, weight + 1.0 if name.endswith("norm.weight") else weight

"""Supported architectures: name (Hugging Face `model_type`, or the GGUF's general.architecture) -> how to
read its config, its model and its weight loader."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from modelbuild import reference
from modelbuild.arch import families, gemma, llama, llama_loader
from modelbuild.errors import BuildError


@dataclass(frozen=True)
class Architecture:
    read_config: Callable  # config.json's dict -> the model's config
    model: type
    load_params: Callable
    reference: type  # reference.py's numpy forward pass of it


def llama_shaped(read_config: Callable) -> Architecture:
    return Architecture(read_config, llama.LlamaForCausalLM, llama_loader.load_params, reference.NumpyLlama)


def gemma_shaped(read_config: Callable) -> Architecture:
    return Architecture(read_config, gemma.GemmaForCausalLM, gemma.load_params, reference.NumpyGemma)


ARCHS = {
    "llama": llama_shaped(families.llama),
    "mistral": llama_shaped(families.llama),  # Llama's layers; a sliding window bounds the context (families.py)
    "qwen2": llama_shaped(families.qwen2),
    "qwen3": llama_shaped(families.qwen3),
    "phi3": llama_shaped(families.phi3),
    "gemma2": gemma_shaped(families.gemma2),
    "gemma3_text": gemma_shaped(families.gemma3_text),
}


def get_arch(name: str) -> Architecture:
    if name not in ARCHS:
        raise BuildError(f"model architecture {name!r} is not supported", f"supported: {', '.join(ARCHS)}")
    return ARCHS[name]

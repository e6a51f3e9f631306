"""Supported architectures: name (Hugging Face `model_type`) -> config, model and weight loader."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from modelbuild.arch import llama, llama_loader
from modelbuild.errors import BuildError


@dataclass(frozen=True)
class Architecture:
    config: type
    model: type
    load_params: Callable


ARCHS = {
    "llama": Architecture(config=llama.LlamaConfig, model=llama.LlamaForCausalLM, load_params=llama_loader.load_params),
}


def get_arch(name: str) -> Architecture:
    if name not in ARCHS:
        raise BuildError(f"model architecture {name!r} is not supported", f"supported: {', '.join(ARCHS)}")
    return ARCHS[name]

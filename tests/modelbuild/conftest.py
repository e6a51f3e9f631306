"""Models built once per test session through the real pipeline."""
import pytest

from modelbuild import pipeline
from tests.modelbuild.tiny_llama import write_tiny_llama


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory):
    """The tiny random Llama in q0f32, q4f32_1 and q4f16_1: (its source folder, the artifact folder)."""
    root = tmp_path_factory.mktemp("tiny")
    folder = write_tiny_llama(root / "tiny-llama")
    out = root / "models"
    pipeline.build(pipeline.BuildOptions(model=folder, presets=["q0f32", "q4f32_1", "q4f16_1"], out_dir=out, wasm_opt="-O1"))
    return folder, out

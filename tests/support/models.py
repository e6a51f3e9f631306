"""The two models the tests run on: the real default model, built into models/ as `make build-model` builds
it, and the tiny random Llama (tiny_llama.py), built into the cache with its own catalog; their catalogs,
and catalogs cut from a build."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.support.repo import REPO

REAL = "SmolLM2-135M-Instruct"  # the default model (tests marked real_model)
TINY = "tiny-llama"             # the tiny random Llama with the real tokenizer (tiny_llama.py)
TINY_SHARD_MB = 1          # the tiny model's weights in several shards: resume, refetch and quota need them
# Where the tiny model is built: kept between sessions, so the build is incremental like models/ is.
TINY_DIR = Path(os.environ.get("SEAM_CACHE", Path.home() / ".cache" / "seam")) / "tests" / "tiny"
TINY_PART_BYTES = 256 << 10  # and each shard in several stored parts


def build_default() -> Path:
    """The real default model, built by the same code `make build-model` runs, into models/.

    The build is incremental: after `make build-model` this only checks that nothing changed.
    """
    from modelbuild import pipeline, source

    pipeline.build(pipeline.BuildOptions(model=source.default_model_path(), presets=["q4f32_1", "q4f16_1"],
                                         out_dir=REPO / "models"))
    return REPO / "models"


def build_tiny() -> tuple[Path, Path]:
    """The tiny random Llama in q0f32, q4f32_1 and q4f16_1, with its own catalog: (its source folder, the
    models folder the app server can serve)."""
    from modelbuild import pipeline
    from tests.support.tiny_llama import write_tiny_llama

    folder = write_tiny_llama(TINY_DIR / "tiny-llama")  # the same bytes every time (a fixed seed)
    out = TINY_DIR / "models"
    (out / "manifest.json").unlink(missing_ok=True)  # a fresh catalog: no chain of compatible versions
    pipeline.build(pipeline.BuildOptions(model=folder, presets=["q0f32", "q4f32_1", "q4f16_1"], out_dir=out,
                                         wasm_opt="-O1", shard_mb=TINY_SHARD_MB))
    return folder, out


def catalog_of(models_dir: Path) -> dict:
    return json.loads((models_dir / "manifest.json").read_text())


def models_subset(built, folder, variant: str, corrupt: str | None = None):
    """A models/ folder holding one variant of a build, optionally with one file's bytes flipped."""
    catalog = json.loads((built / "manifest.json").read_text())
    catalog["models"] = [m for m in catalog["models"] if m["id"] == variant]
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(catalog))
    shutil.copytree(built / variant, folder / variant)
    if corrupt:
        shard = folder / variant / corrupt
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, different bytes: only the sha256 can tell
        shard.write_bytes(bytes(data))
    return folder

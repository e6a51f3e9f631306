"""Weights -> the quantized parameters, written as a tvmjs tensor cache with a sha256 per shard.

The layout is MLC's (`tensor-cache.json` + `params_shard_*.bin`), written by tvmjs's own writer so
tvmjs reads it back; we add each shard's sha256 so the page can verify what it downloaded, and a copy
named `ndarray-cache.json` for tools that still look for the old name.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
from tvm.contrib import tvmjs

from modelbuild.errors import BuildError

SHARD_MB = 32  # MLC's shard size: small enough for mobile browsers, few enough requests


def write_tensor_cache(params: dict[str, np.ndarray], expected: dict[str, tuple[tuple, str]], out_dir: Path,
                       shard_mb: float = SHARD_MB) -> dict:
    """Check every parameter against the shapes the compiled model expects, then write shards of at most
    `shard_mb` MiB (a tensor larger than that gets a shard of its own)."""
    missing = sorted(set(expected) - set(params))
    if missing:
        raise BuildError(f"the converted weights lack {len(missing)} parameters, e.g. {missing[:3]}",
                         "the checkpoint does not match its config.json")
    for name, (shape, dtype) in expected.items():
        if tuple(params[name].shape) != tuple(shape) or str(params[name].dtype) != dtype:
            raise BuildError(f"{name} has shape {params[name].shape} {params[name].dtype}, the model expects "
                             f"{tuple(shape)} {dtype}", "the checkpoint does not match its config.json")
    with contextlib.redirect_stdout(io.StringIO()):  # tvmjs prints its own progress lines
        tvmjs.dump_tensor_cache(((name, params[name]) for name in expected), str(out_dir),
                                encode_format="raw", shard_cap_mb=shard_mb, show_progress=False)
    index_path = out_dir / "tensor-cache.json"
    index = json.loads(index_path.read_text())
    for shard in index["records"]:
        shard["sha256"] = sha256_file(out_dir / shard["dataPath"])
    index_path.write_text(json.dumps(index, indent=1))
    shutil.copyfile(index_path, out_dir / "ndarray-cache.json")
    return index


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def verify_tensor_cache(folder: Path) -> None:
    """Every shard is there, has its recorded size and hash."""
    index = json.loads((folder / "tensor-cache.json").read_text())
    for shard in index["records"]:
        path = folder / shard["dataPath"]
        if not path.is_file() or path.stat().st_size != shard["nbytes"] or sha256_file(path) != shard["sha256"]:
            raise BuildError(f"shard {path} is missing or does not match its recorded size and sha256",
                             "rerun `make build-model`")

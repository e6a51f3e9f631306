"""Bad input to `python -m modelbuild build`: one clear line naming the problem and the fix, a non-zero
exit, and never a partial artifact in place of a good one."""
import json
import shutil
import subprocess
import sys

import pytest

from modelbuild import source


def run_build(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "modelbuild", "build", *args], capture_output=True, text=True, cwd=cwd)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return proc.returncode, errors, proc.stderr


def test_missing_file(tmp_path):
    code, errors, _ = run_build("--model", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "out"))
    assert code != 0 and errors == [f"error: {tmp_path / 'nope.gguf'} does not exist"]


def test_unknown_preset(tmp_path):
    code, errors, _ = run_build("--quant", "q3f7", "--out", str(tmp_path / "out"))
    assert code != 0 and errors == ["error: unknown quantization preset 'q3f7'"]


def test_garbage_gguf(tmp_path):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 100)
    code, errors, stderr = run_build("--model", str(bad), "--out", str(tmp_path / "out"))
    assert code != 0 and len(errors) == 1 and "not a readable GGUF file" in errors[0]
    assert "download or copy it again" in stderr


def test_truncated_gguf(tmp_path):
    real = source.default_model_path()
    cut = tmp_path / real.name
    with open(real, "rb") as f:
        cut.write_bytes(f.read(real.stat().st_size // 2))
    code, errors, _ = run_build("--model", str(cut), "--out", str(tmp_path / "out"))
    assert code != 0 and len(errors) == 1 and ("truncated" in errors[0] or "not a readable GGUF" in errors[0])
    assert not (tmp_path / "out" / "manifest.json").exists()


def copy_source(tiny_built, tmp_path):
    folder = tmp_path / "tiny-llama"
    shutil.copytree(tiny_built[0], folder)
    return folder


def test_unsupported_architecture(tiny_built, tmp_path):
    folder = copy_source(tiny_built, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
    code, errors, _ = run_build("--model", str(folder), "--out", str(tmp_path / "out"))
    assert code != 0 and errors == ["error: model architecture 'gpt2' is not supported"]


def test_unreadable_tokenizer(tiny_built, tmp_path):
    folder = copy_source(tiny_built, tmp_path)
    (folder / "tokenizer.json").write_text('{"model": "not a tokenizer"')
    code, errors, _ = run_build("--model", str(folder), "--out", str(tmp_path / "out"))
    assert code != 0 and len(errors) == 1 and "cannot be read as a tokenizer" in errors[0]


def test_truncated_safetensors(tiny_built, tmp_path):
    folder = copy_source(tiny_built, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    code, errors, _ = run_build("--model", str(folder), "--out", str(tmp_path / "out"))
    assert code != 0 and len(errors) == 1 and "is truncated" in errors[0]


def test_failed_rebuild_keeps_the_good_artifacts(tiny_built, tmp_path):
    """A build that fails late (after compiling) leaves the previous, verified artifacts untouched."""
    folder = copy_source(tiny_built, tmp_path)
    out = tmp_path / "out"
    shutil.copytree(tiny_built[1], out, ignore=shutil.ignore_patterns("*.html", "tvmjs.js"))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # The weights no longer match the config: caught when the shards are written, after compilation.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, intermediate_size=96)))
    code, errors, _ = run_build("--model", str(folder), "--out", str(out), "--quant", "q0f32", "--wasm-opt=-O1")
    assert code != 0 and len(errors) == 1 and "shape" in errors[0]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary build folder was left behind"

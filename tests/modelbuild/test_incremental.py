"""A rerun with nothing changed rebuilds nothing; a missing or changed preset rebuilds only itself."""
import shutil

from modelbuild import pipeline
from tests.support.models import TINY_SHARD_MB


def snapshot(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_rebuilds_only_the_preset_that_needs_it(tiny_built, tmp_path, capsys):
    source_folder, built = tiny_built
    out = tmp_path / "models"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns("*.html", "tvmjs.js"))
    kept = snapshot(out / "tiny-llama-q4f32_1")
    shutil.rmtree(out / "tiny-llama-q0f32")

    options = pipeline.BuildOptions(model=source_folder, presets=["q0f32", "q4f16_1", "q4f32_1"], out_dir=out,
                                    wasm_opt="-O1", shard_mb=TINY_SHARD_MB)  # as tiny_built built them
    entries = pipeline.build(options)
    printed = capsys.readouterr().out
    assert "tiny-llama-q4f32_1: up to date, skipped" in printed
    assert "tiny-llama-q0f32: building" in printed
    assert snapshot(out / "tiny-llama-q4f32_1") == kept
    assert [e["id"] for e in entries] == ["tiny-llama-q0f32", "tiny-llama-q4f16_1", "tiny-llama-q4f32_1"]

    rebuilt = snapshot(out)
    pipeline.build(options)
    printed = capsys.readouterr().out
    assert printed.count("up to date, skipped") == 3 and "building" not in printed
    assert {k: v for k, v in snapshot(out).items() if k.name != "manifest.json"} == \
           {k: v for k, v in rebuilt.items() if k.name != "manifest.json"}


def test_a_kernel_only_rebuild_keeps_cached_versions_usable(tiny_built, tmp_path):
    from modelbuild import manifest

    _, built = tiny_built
    out = tmp_path / "models"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns("*.html", "tvmjs.js"))
    first = {e["id"]: e for e in manifest.write_manifest(out)}["tiny-llama-q4f32_1"]
    folder = out / "tiny-llama-q4f32_1"
    wasm = folder / first["files"]["wasm_software"]
    wasm.write_bytes(wasm.read_bytes() + b"\0")  # new kernels, same weights, tokenizer and config
    second = {e["id"]: e for e in manifest.write_manifest(out)}["tiny-llama-q4f32_1"]
    assert second["version"] != first["version"] and second["weights_version"] == first["weights_version"]
    assert second["compatible_versions"] == [first["version"]]
    assert manifest.write_manifest(out)[2]["compatible_versions"] == [first["version"]]  # a rerun keeps the chain

    config = folder / first["files"]["config"]
    config.write_text(config.read_text().replace('"temperature": 0.7', '"temperature": 0.6'))  # not the same model
    third = {e["id"]: e for e in manifest.write_manifest(out)}["tiny-llama-q4f32_1"]
    assert third["weights_version"] != first["weights_version"] and "compatible_versions" not in third

"""The runtime cache is never left half-built, and a missing runtime says what to run."""
import os

import pytest

from modelbuild.errors import ToolchainError
from modelbuild.toolchain import web_runtime


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh SEAM_CACHE that reuses the already-downloaded header wheels, so no network is needed."""
    real_wheels = web_runtime.cache_root() / "wheels"
    monkeypatch.setenv("SEAM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    if real_wheels.is_dir():
        os.symlink(real_wheels, tmp_path / "cache" / "wheels")
    return tmp_path / "cache"


def test_missing_runtime_names_the_fix(empty_cache):
    with pytest.raises(ToolchainError, match="make setup"):
        web_runtime.runtime_objects()


def test_failed_compile_leaves_nothing_a_later_run_would_trust(empty_cache, tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "emcc").write_text("#!/bin/sh\necho 'wasm_runtime.cc:1:1: error: injected failure' >&2\nexit 1\n")
    (fake_bin / "emcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")

    with pytest.raises(ToolchainError, match="(?s)emcc failed on .*injected failure"):
        web_runtime.ensure_built(log=lambda message: None)

    built = empty_cache / "web-runtime"
    assert not web_runtime.runtime_dir().exists()
    assert not list(built.glob("building-*")), "the temporary build folder was left behind"
    with pytest.raises(ToolchainError):
        web_runtime.runtime_objects()


def test_the_threads_edits_find_their_code_in_this_tvm():
    """The threads flavor replaces TVM's serial parallel launch and locks its workspace allocation: each text
    it replaces is in the installed apache-tvm once, or the build would run serially or unlocked."""
    tvm_root = web_runtime.package_dir("tvm")
    for name, theirs, _ in web_runtime.THREADS_EDITS:
        assert (tvm_root / name).read_text().count(theirs) == 1, name


def test_a_tvm_without_the_serial_launch_fails_the_threads_build(tmp_path):
    (tmp_path / "web" / "emcc").mkdir(parents=True)
    (tmp_path / "web" / "emcc" / "wasm_runtime.cc").write_text("// a TVM whose wasm runtime has moved on\n")
    with pytest.raises(ToolchainError, match="THREADS_EDITS"):
        web_runtime.apply_edits(tmp_path, web_runtime.THREADS_EDITS)


def test_each_flavor_has_its_own_cache():
    assert web_runtime.cache_key("threads") != web_runtime.cache_key("single")
    assert web_runtime.runtime_dir("threads").name.endswith("_threads")

"""The half<->float header we ship for the wasm runtime build, checked bit-exactly against numpy.

TVM's runtime sorts and converts f16 tensors with these templates; a wrong rounding would not crash,
it would silently shift values, so every half value and several million floats are compared.
"""
import shutil
import subprocess

import numpy as np
import pytest

from modelbuild.toolchain import web_runtime

DRIVER = r"""
#include <builtin_fp16.h>
#include <cstdio>
#include <cstring>
#include <vector>
// usage: driver MODE IN OUT, MODE: h2f (uint16 -> float), f2h (float -> uint16), d2h (double -> uint16)
int main(int argc, char** argv) {
  FILE* in = std::fopen(argv[2], "rb");
  FILE* out = std::fopen(argv[3], "wb");
  std::vector<unsigned char> buf;
  unsigned char chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, in)) > 0) buf.insert(buf.end(), chunk, chunk + n);
  if (!std::strcmp(argv[1], "h2f")) {
    for (size_t i = 0; i < buf.size(); i += 2) {
      uint16_t h; std::memcpy(&h, &buf[i], 2);
      float f = __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(h);
      std::fwrite(&f, 4, 1, out);
    }
  } else if (!std::strcmp(argv[1], "f2h")) {
    for (size_t i = 0; i < buf.size(); i += 4) {
      float f; std::memcpy(&f, &buf[i], 4);
      uint16_t h = __truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>(f);
      std::fwrite(&h, 2, 1, out);
    }
  } else {
    for (size_t i = 0; i < buf.size(); i += 8) {
      double d; std::memcpy(&d, &buf[i], 8);
      uint16_t h = __truncXfYf2__<double, uint64_t, 52, uint16_t, uint16_t, 10>(d);
      std::fwrite(&h, 2, 1, out);
    }
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def convert(tmp_path_factory):
    """Compile the driver against the shipped header once; return a function that runs it."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.fail("no C++ compiler: install g++ (apt-get install g++)")
    work = tmp_path_factory.mktemp("fp16")
    (work / "driver.cc").write_text(DRIVER)
    header_dir = web_runtime.OWN_HEADERS / "compiler-rt"
    subprocess.run([cxx, "-O2", "-std=c++17", f"-I{header_dir}", "driver.cc", "-o", "driver"],
                   cwd=work, check=True)

    def run(mode, values, out_dtype):
        (work / "in.bin").write_bytes(values.tobytes())
        subprocess.run([str(work / "driver"), mode, "in.bin", "out.bin"], cwd=work, check=True)
        return np.fromfile(work / "out.bin", dtype=out_dtype)

    return run


def assert_same_bits(got, want):
    """Equal bit patterns, except that any NaN only has to stay a NaN."""
    want_nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), want_nan)
    mismatch = np.flatnonzero((got.view(np.uint32 if got.itemsize == 4 else np.uint16)
                               != want.view(np.uint32 if want.itemsize == 4 else np.uint16)) & ~want_nan)
    assert mismatch.size == 0, f"{mismatch.size} values differ, first at {want[mismatch[:5]]}"


def test_every_half_widens_exactly(convert):
    halves = np.arange(1 << 16, dtype=np.uint16)
    got = convert("h2f", halves, np.float32)
    assert_same_bits(got, halves.view(np.float16).astype(np.float32))


def test_float_narrows_with_ties_to_even(convert):
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)].astype(np.float32)
    ordered = np.unique(finite)
    # Exact halves, the midpoints between neighbours (the ties), points just off the midpoints,
    # random bit patterns over the whole float range, and values around the overflow threshold.
    mid = ((ordered[:-1].astype(np.float64) + ordered[1:]) / 2).astype(np.float32)
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 1 << 32, size=4_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([65504, 65519.99, 65520, 1e9, 6e-8, 2.98e-8, 2.99e-8, 1e-45, -0.0, np.inf, -np.inf, np.nan],
                     dtype=np.float32)
    values = np.concatenate([finite, mid, np.nextafter(mid, np.float32(np.inf)),
                             np.nextafter(mid, np.float32(-np.inf)), random_bits, edges])
    got = convert("f2h", values, np.uint16).view(np.float16)
    with np.errstate(over="ignore"):
        assert_same_bits(got, values.astype(np.float16))


def test_double_narrows_like_numpy(convert):
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(200_000) * 10.0 ** rng.integers(-9, 6, 200_000),
                             [65520.0, 65519.999999, 1e300, -1e-300, 0.0]])
    got = convert("d2h", values, np.uint16).view(np.float16)
    with np.errstate(over="ignore"):
        assert_same_bits(got, values.astype(np.float16))

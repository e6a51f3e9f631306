"""The CPU kernels the model's CPU builds (the server's library, the browser's wasm) are made of, each
compiled alone for this machine's CPU and checked against numpy: decode's factored matrix-vector
product (4- and 8-bit, with a fused epilogue), prefill's matmul over a row count its row tiles do not
divide, and the attention kernels that replace TVM's (prefill over a chunk, prefill over the cache's pages,
decode over the pages). The whole models are checked in
test_tiny_llama.py and test_families.py; these name the kernel when one is wrong.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm import te

from modelbuild import schedule
from modelbuild.cpu_attention import EMPTY_LSE, paged_decode, paged_prefill, ragged_prefill
from modelbuild.quantization.group_quant import WeightFormat, dequantize_gemv_te, dequantize_matmul_te, unpack
from modelbuild.toolchain import targets
from tests.support.logits import attention_reference

RNG = np.random.default_rng(3)


def random_weight(k: int, o: int, bits: int):
    """Packed codes, scales and minimums (None for 8 bits) in the layout of group_quant.py, and W[o, k]."""
    arrays = {"q_weight": RNG.integers(0, 2**32, (k * bits // 32, o), dtype=np.uint64).astype(np.uint32),
              "q_scale": (RNG.random((k // 32, o)) * 0.02 + 0.001).astype(np.float32)}
    if bits == 4:
        arrays["q_min"] = (-RNG.random((k // 32, o)) * 0.1).astype(np.float32)
    return list(arrays.values()), unpack(arrays, bits)


def compile_and_run(func, rule, inputs, out_shape):
    sch = rule.apply(func, targets.cpu(), False)
    assert sch is not None, f"{type(rule).__name__} did not match the kernel"
    library = tvm.tirx.build(sch.mod, target=targets.cpu())
    tvm.tirx.build(rule.apply(func, targets.wasm_cpu(), False).mod, target=targets.wasm_cpu())  # it lowers for wasm too
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in inputs] + [tvm.runtime.empty(out_shape, "float32", tvm.cpu())]
    library["main"](*args)
    return args[-1].numpy().astype(np.float64)


def quantized_matmul(matmul, rows, k: int, o: int, bits: int):
    """x[1, rows, k] @ W.T + r, as one kernel (the residual add fused after it, as Relax fuses it)."""
    fmt = WeightFormat(bits, "float32")
    x = te.placeholder((1, rows, k), "float32", name="x")
    packed = te.placeholder((k // fmt.per_word, o), "uint32", name="w")
    scale = te.placeholder((k // 32, o), "float32", name="s")
    minimum = te.placeholder((k // 32, o), "float32", name="m") if fmt.has_min else None
    residual = te.placeholder((1, rows, o), "float32", name="r")
    product = matmul(x, packed, scale, minimum, fmt)
    out = te.compute(product.shape, lambda *i: product(*i) + residual(*i), name="add")
    weights = [packed, scale] + ([minimum] if minimum is not None else [])
    return te.create_prim_func([x, *weights, residual, out])


@pytest.mark.parametrize("bits", [4, 8])
def test_factored_decode_gemv_matches_numpy(bits):
    k, o = 576, 320  # o: five blocks of the schedule's columns
    arrays, w = random_weight(k, o, bits)
    x = RNG.standard_normal((1, 1, k)).astype(np.float32)
    residual = RNG.standard_normal((1, 1, o)).astype(np.float32)
    func = quantized_matmul(dequantize_gemv_te, 1, k, o, bits)
    got = compile_and_run(func, schedule.CpuFactoredGemv(), [x, *arrays, residual], (1, 1, o))
    want = x[0].astype(np.float64) @ w.T + residual[0]
    np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_prefill_matmul_pads_rows_its_tiles_do_not_divide():
    k, o, n = 576, 64, 13  # 13 rows: one tile of 8 and a padded one
    arrays, w = random_weight(k, o, 4)
    x = RNG.standard_normal((1, n, k)).astype(np.float32)
    residual = RNG.standard_normal((1, n, o)).astype(np.float32)
    func = quantized_matmul(dequantize_matmul_te, tvm.tirx.Var("n", "int64"), k, o, 4)
    got = compile_and_run(func, schedule.CpuDequantMatmul(), [x, *arrays, residual], (1, n, o))
    want = x[0].astype(np.float64) @ w.T + residual[0]
    np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("causal", [1, 0])
def test_cpu_prefill_attention_matches_numpy(causal):
    """Two sequences in one call (ragged: 5 queries over 9 keys, 7 over 7), grouped-query heads."""
    h_kv, h_q, d = 2, 6, 32
    q_lens, kv_lens = [5, 7], [9, 7]
    q = RNG.standard_normal((sum(q_lens), h_q, d)).astype(np.float32)
    k, v = (RNG.standard_normal((sum(kv_lens), h_kv, d)).astype(np.float32) for _ in range(2))
    q_indptr, kv_indptr = (np.concatenate([[0], np.cumsum(n)]).astype(np.int32) for n in (q_lens, kv_lens))
    out, lse = np.zeros_like(q), np.zeros((len(q), h_q), np.float32)
    library = tvm.tirx.build(ragged_prefill(h_kv, h_q, d, "float32").with_attr("global_symbol", "main"),
                             target=targets.cpu())
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in
            (q, q_indptr, k, v, kv_indptr, np.zeros(len(q), np.int32), np.zeros(2, np.int32), out, lse)]
    scale = 1 / np.sqrt(d)
    library["main"](*args, causal, 0, 1.0, 10000.0, scale)
    for b in range(2):
        rows, keys = slice(q_indptr[b], q_indptr[b + 1]), slice(kv_indptr[b], kv_indptr[b + 1])
        want_out, want_lse = attention_reference(q[rows], k[keys], v[keys], bool(causal), scale)
        np.testing.assert_allclose(args[7].numpy()[rows], want_out, rtol=0, atol=1e-5)
        np.testing.assert_allclose(args[8].numpy()[rows], want_lse, rtol=0, atol=1e-4)


def test_cpu_prefill_attention_refuses_inline_rotary_embedding():
    library = tvm.tirx.build(ragged_prefill(1, 1, 4, "float32").with_attr("global_symbol", "main"),
                             target=targets.cpu())
    one, indptr = np.zeros((1, 1, 4), np.float32), np.array([0, 1], np.int32)
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in (one, indptr, one, one, indptr, np.zeros(1, np.int32),
                                                        np.zeros(1, np.int32), one.copy(), np.zeros((1, 1), np.float32))]
    with pytest.raises(Exception, match="applies no rotary embedding"):
        library["main"](*args, 1, 1, 1.0, 10000.0, 0.5)


def paged(k_seqs, v_seqs, page_size: int):
    """The KV cache's pages [page, k|v, head, slot, d] holding each sequence's keys and values, its pages in
    a shuffled order (page_indptr, page_values), and each sequence's last page's length."""
    counts = [-(-len(k) // page_size) for k in k_seqs]
    order = RNG.permutation(sum(counts) + 2).astype(np.int32)  # (two pages that no sequence uses)
    pages = RNG.standard_normal((len(order), 2, *k_seqs[0].shape[1:2], page_size, k_seqs[0].shape[2]))
    pages = pages.astype(np.float32)
    page_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    for b, (k, v) in enumerate(zip(k_seqs, v_seqs)):
        for j in range(len(k)):
            page = order[page_indptr[b] + j // page_size]
            pages[page, 0, :, j % page_size], pages[page, 1, :, j % page_size] = k[j], v[j]
    last_page_len = np.array([len(k) - (n - 1) * page_size for k, n in zip(k_seqs, counts)], np.int32)
    return pages, page_indptr, order[:sum(counts)].copy(), last_page_len


def run_kernel(func, args, scalars):
    library = tvm.tirx.build(func.with_attr("global_symbol", "main"), target=targets.cpu())
    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in args]
    library["main"](*tensors, *scalars)
    return [t.numpy() for t in tensors]


@pytest.mark.parametrize("causal", [1, 0])
def test_cpu_paged_prefill_attention_matches_numpy(causal):
    """A next turn's queries over the kept pages: three sequences (5 queries over 37 keys in pages of 16, 3
    over 3, and 6 over 4, whose first two queries may see no key when causal)."""
    h_kv, h_q, d, page_size = 2, 6, 32, 16
    q_lens, kv_lens = [5, 3, 6], [37, 3, 4]
    q = RNG.standard_normal((sum(q_lens), h_q, d)).astype(np.float32)
    ks, vs = ([RNG.standard_normal((n, h_kv, d)).astype(np.float32) for n in kv_lens] for _ in range(2))
    pages, page_indptr, page_values, last_page_len = paged(ks, vs, page_size)
    q_indptr = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    scale = 1 / np.sqrt(d)
    out, lse = run_kernel(paged_prefill(h_kv, h_q, d, page_size, "float32"),
                          [q, q_indptr, pages, page_indptr, page_values, last_page_len, np.zeros(3, np.int32),
                           np.zeros(len(q), np.int32), np.zeros_like(q), np.zeros((len(q), h_q), np.float32)],
                          [causal, 0, 1.0, 10000.0, scale])[8:]
    for b in range(3):
        rows = slice(q_indptr[b], q_indptr[b + 1])
        blind = max(0, q_lens[b] - kv_lens[b]) if causal else 0  # queries before every key
        want_out, want_lse = attention_reference(q[rows][blind:], ks[b], vs[b], bool(causal), scale)
        np.testing.assert_allclose(out[rows][blind:], want_out, rtol=0, atol=1e-5)
        np.testing.assert_allclose(lse[rows][blind:], want_lse, rtol=0, atol=1e-4)
        assert (out[rows][:blind] == 0).all() and (lse[rows][:blind] == EMPTY_LSE).all()


def test_cpu_paged_decode_attention_matches_numpy():
    """One query per sequence over all of its pages: sequences of 1, 16, 17 and 100 keys."""
    h_kv, h_q, d, page_size = 3, 9, 64, 16
    kv_lens = [1, 16, 17, 100]
    q = RNG.standard_normal((len(kv_lens), h_q, d)).astype(np.float32)
    ks, vs = ([RNG.standard_normal((n, h_kv, d)).astype(np.float32) for n in kv_lens] for _ in range(2))
    pages, page_indptr, page_values, last_page_len = paged(ks, vs, page_size)
    scale = 1 / np.sqrt(d)
    out, lse = run_kernel(paged_decode(h_kv, h_q, d, page_size, "float32"),
                          [q, pages, page_indptr, page_values, last_page_len, np.zeros(4, np.int32),
                           np.zeros(4, np.int32), np.zeros_like(q), np.zeros((4, h_q), np.float32)],
                          [0, 1.0, 10000.0, scale])[7:]
    for b in range(len(kv_lens)):
        want_out, want_lse = attention_reference(q[b:b + 1], ks[b], vs[b], False, scale)
        np.testing.assert_allclose(out[b:b + 1], want_out, rtol=0, atol=1e-5)
        np.testing.assert_allclose(lse[b:b + 1], want_lse, rtol=0, atol=1e-4)


TWO_THREADS = "SEAM_KERNEL_TESTS_ON_TWO_THREADS"


def test_the_two_thread_run_has_two_threads():
    """(Asked only there: TVM's runtime.NumThreads pins the calling thread to one core, and the suite's process
    must keep every core for the tests after this one.)"""
    if not os.environ.get(TWO_THREADS):
        pytest.skip("asked only in the run on two threads")
    assert tvm.get_global_func("runtime.NumThreads")() == 2


def test_the_kernels_match_numpy_on_two_threads_too():
    """The tests above again, in a process whose TVM thread pool has two threads: every parallel loop (the
    matmuls' output columns, the attention's heads) split between them gives numpy's results too."""
    if os.environ.get(TWO_THREADS):
        pytest.skip("this is the run on two threads")
    env = {**os.environ, "TVM_NUM_THREADS": "2", TWO_THREADS: "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "1 skipped" in done.stdout, done.stdout[-500:]  # all but this one ran

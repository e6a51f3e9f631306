"""The numpy references that the model-build tests compare compiled models and kernels against, and their
tolerances (tests/modelbuild/test_tiny_llama.py explains the bounds); logits.html runs a build's steps in a
browser (served next to the build by `serve_logits_page`)."""
import json
import shutil
from pathlib import Path

import numpy as np
import tvm

from modelbuild.arch.llama import LlamaConfig
from modelbuild.reference import NumpyLlama, dequantized_weights
from modelrun.model import load_tensor_cache
from router.ops import ISOLATION_HEADERS
from tests.support.node import ENGINE_JS
from tests.support.repo import TVMJS

RTOL = 2e-3
F16_RTOL = 2e-2
PROMPT = [int(i) for i in np.random.default_rng(7).integers(3, 49152, size=40)]  # 3 prefill chunks of 16
DECODE = [17, 4242, 30000]
RUN = {"promptIds": PROMPT, "decodeIds": DECODE}


def reference_steps(model_dir, preset_name):
    """float64 numpy logits after the prompt and after each decode token."""
    config = json.loads((model_dir / "mlc-chat-config.json").read_text())
    params = load_tensor_cache(model_dir / "tensor-cache.json", tvm.cpu())
    weights = dequantized_weights({k: v.numpy() for k, v in params.items()})
    model = NumpyLlama(LlamaConfig.from_dict(config["model_config"]), weights)
    steps = [model.forward(PROMPT)[-1]]
    steps += [model.forward([token])[-1] for token in DECODE]
    return config, steps


def assert_logits_close(got, want, rtol=RTOL):
    got = np.asarray(got, np.float64)
    bound = rtol * np.abs(want).max()
    err = np.abs(got - want).max()
    assert err <= bound, f"max logit error {err:.3g}, logits of scale {np.abs(want).max():.3g}"
    # The same greedy token, unless the reference's best two are closer than the error bound allows.
    assert want[int(np.argmax(got))] >= want.max() - 2 * bound


# The engine's modules the page's threaded CPU build imports (cpu_threads.js and what it imports).
THREAD_MODULES = ("cpu_threads.js", "cpu_thread.js", "errors.js")


def serve_logits_page(built, serve_folder, isolated: bool = False) -> str:
    """logits.html beside the built models; `isolated`: served with the app server's isolation headers
    (router/ops.py), which give the page the shared memory of the threaded CPU build."""
    shutil.copy(TVMJS, built / "tvmjs.js")
    shutil.copy(Path(__file__).with_name("logits.html"), built / "logits.html")
    for name in THREAD_MODULES:
        shutil.copy(ENGINE_JS / name, built / name)
    return serve_folder(built, ISOLATION_HEADERS if isolated else None) + "logits.html"


def assert_steps_close(result, expected, rtol=RTOL):
    assert len(result["steps"]) == len(expected)
    for got, want in zip(result["steps"], expected):
        assert_logits_close(got, want, rtol)


def attention_reference(q, k, v, causal: bool, scale: float):
    """Each query row's softmax-weighted values over the keys it may see, and log2 of the softmax sum of
    its base-2 scores (the kernel's log-sum-exp)."""
    group = q.shape[1] // k.shape[1]
    k, v = (np.repeat(a.astype(np.float64), group, axis=1) for a in (k, v))
    scores = np.einsum("qhd,khd->hqk", q.astype(np.float64), k) * scale * np.log2(np.e)
    if causal:  # the last query row sees every key; each earlier row one fewer
        scores = np.where(np.tri(len(q), len(k), len(k) - len(q), dtype=bool), scores, -np.inf)
    top = scores.max(-1, keepdims=True)
    weights = np.exp2(scores - top)
    out = np.einsum("hqk,khd->qhd", weights / weights.sum(-1, keepdims=True), v)
    return out, (top[..., 0] + np.log2(weights.sum(-1))).T

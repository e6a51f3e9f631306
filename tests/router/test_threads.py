"""The server's engine runs on every core it may use (affinity, cgroup quota), or SEAM_THREADS, clamped."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from router.threads import available_cores, cgroup_cores, engine_threads
from tests.support.repo import REPO
from tests.support.servers import seam_server

AFFINITY = len(os.sched_getaffinity(0))
CORES = available_cores()[0]  # this machine's, as the server sees them


@pytest.mark.parametrize("cpu_max, cores", [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1),
                                            ("400000 100000\n", 4), ("", None)])
def test_a_cgroup_quota_is_read_as_cores_rounded_up(tmp_path, cpu_max, cores):
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert cgroup_cores(tmp_path / "cpu.max") == cores


def test_the_quota_limits_the_cores_only_where_it_is_below_the_affinity(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # one core's worth
    assert available_cores(quota) == (1, f"the cgroup's CPU quota ({quota})")
    quota.write_text(f"{100000 * (AFFINITY + 4)} 100000\n")
    assert available_cores(quota) == (AFFINITY, "the process's CPU affinity")
    assert available_cores(tmp_path / "absent") == (AFFINITY, "the process's CPU affinity")


def test_zero_means_every_core_and_a_count_over_them_is_clamped_with_a_reason(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000\n")
    cores = min(2, AFFINITY)
    assert engine_threads(0, quota)[0] == cores
    count, why = engine_threads(64, quota)
    assert count == cores and "SEAM_THREADS=64" in why and "clamped" in why
    assert engine_threads(1, quota)[0] == 1
    with pytest.raises(ValueError, match="SEAM_THREADS=-1"):
        engine_threads(-1, quota)


def test_tvm_runs_the_engine_on_the_count_chosen():
    """TVM's thread pool (one per calling thread, sized when it starts) takes the count use_threads set:
    TVM's own default here would be half the cores."""
    script = ("import threading, tvm\nfrom router.threads import use_threads\n"
              "chosen = use_threads({n})\nseen = []\n"
              "worker = threading.Thread(target=lambda: seen.append(tvm.get_global_func('runtime.NumThreads')()))\n"
              "worker.start(); worker.join(); print(chosen, seen[0])")
    for requested in {1, AFFINITY}:
        out = subprocess.run([sys.executable, "-c", script.format(n=requested)], cwd=REPO, capture_output=True,
                             text=True, env={**os.environ, "TVM_USE_RUNTIME_LIB": "1"}, check=True).stdout.split()
        assert out == [str(requested), str(requested)]


@pytest.mark.parametrize("setting, expected", [("0", CORES), ("1", 1), ("64", CORES)])
def test_the_server_says_how_many_threads_its_engine_runs_on(default_built, setting, expected):
    with seam_server(default_built, SEAM_THREADS=setting) as url:
        assert requests.get(url + "/healthz", timeout=5).json()["engine_threads"] == expected

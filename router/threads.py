"""How many threads the server's engine runs on: every core this process may use, unless SEAM_THREADS says.

TVM's runtime would take half the hardware's threads on x86 (it takes them for hyper-threads), and it
knows nothing of a container's CPU quota or the process's affinity, so the count is decided here and
handed to TVM through TVM_NUM_THREADS, which each thread's TVM thread pool reads when it first runs a
parallel loop (so it is set before the engine loads).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"

log = logging.getLogger("seam")


def cgroup_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The cores a cgroup v2 CPU quota allows (rounded up), or None where there is no quota."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> tuple[int, str]:
    """The cores this process may use, and where that limit comes from (affinity, or the cgroup quota)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cores(cpu_max)
    if quota is not None and quota < affinity:
        return quota, f"the cgroup's CPU quota ({cpu_max})"
    return affinity, "the process's CPU affinity"


def engine_threads(requested: int, cpu_max: Path = CGROUP_CPU_MAX) -> tuple[int, str]:
    """The thread count for `requested` (SEAM_THREADS; 0 means every available core), clamped to the cores
    available, and a line saying how it was chosen."""
    if requested < 0:
        raise ValueError(f"SEAM_THREADS={requested}: give a thread count, or 0 for every core this process may use")
    cores, source = available_cores(cpu_max)
    if requested == 0:
        return cores, f"{cores} threads: every core this process may use ({source})"
    if requested > cores:
        return cores, (f"{cores} threads: SEAM_THREADS={requested} is more than the {cores} cores this process "
                       f"may use ({source}), so clamped")
    return requested, f"{requested} threads (SEAM_THREADS; {cores} cores available)"


def use_threads(requested: int) -> int:
    """Sets the engine's thread count for this process and logs it; returns the count."""
    count, why = engine_threads(requested)
    os.environ["TVM_NUM_THREADS"] = str(count)
    log.info("the server's engine runs on %s", why)
    return count

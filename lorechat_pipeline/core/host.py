"""What this process may use of the machine it runs on."""

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs a container's cgroup grants (Fargate's 0.5 vCPU is 0.5), or None if unlimited.

    cgroup v2 (`cpu.max`: "<quota> <period>" or "max <period>") or v1 (`cpu.cfs_quota_us`,
    -1 for unlimited, over `cpu.cfs_period_us`)."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores to size thread pools by: the CPU set this process may run on, capped by the
    container's CPU quota (os.cpu_count() reports the host's, so a 0.5 vCPU task on a 2-core
    host would otherwise run two encoders on half a core)."""
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)

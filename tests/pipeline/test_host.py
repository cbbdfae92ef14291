"""Thread pools are sized by what the container grants, not by the host's core count."""

import os
from pathlib import Path

import pytest

from lorechat_pipeline.core.host import cpu_quota, usable_cores


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, quota_us: int, period_us: int = 100_000) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return root


@pytest.mark.parametrize(
    ("cpu_max", "quota", "cores"),
    [
        ("50000 100000", 0.5, 1),  # Fargate's 0.5 vCPU: one encoder, not one per host core
        ("100000 100000", 1.0, 1),
        ("150000 100000", 1.5, 2),
    ],
)
def test_a_cgroup_v2_quota_caps_the_cores(
    tmp_path: Path, cpu_max: str, quota: float, cores: int
) -> None:
    root = cgroup_v2(tmp_path, cpu_max)
    assert cpu_quota(root) == quota
    assert usable_cores(root) == min(cores, affinity())


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    assert cpu_quota(cgroup_v1(tmp_path / "v1", 50_000)) == 0.5
    assert usable_cores(tmp_path / "v1") == 1
    assert cpu_quota(cgroup_v1(tmp_path / "v1-unlimited", -1)) is None
    assert cpu_quota(cgroup_v2(tmp_path / "v2-unlimited", "max 100000")) is None
    assert usable_cores(tmp_path / "v2-unlimited") == affinity()
    assert usable_cores(tmp_path / "none") == affinity()  # not in a container

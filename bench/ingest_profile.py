"""Where an ingest's CPU goes, process by process: `lorechat ingest` on a fresh home, its process
tree read from /proc twice a second.

    .venv/bin/python bench/ingest_profile.py SOURCE [--home DIR] [--timeline SECONDS] [--json OUT]

Prints wall seconds and the CPU seconds of each role (the pipeline's own process, the encoder's
child process, the parser workers, anything else it started), the idle and stolen core-seconds of
the whole machine over the run (stolen: taken by the hypervisor, a noisy host's mark) and, with
`--timeline`, the same per window of that many seconds: where the encoder stalls, what runs
beside it. A process that exits between two samples loses its last half second at most. Set
`LORECHAT_ONNX_CACHE_DIR` to a warm export cache to leave the one-off ONNX export out of it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.processes import CLOCK_TICKS, descendants, process_stats

SAMPLE_SECONDS = 0.5
ROLES = ("pipeline", "encoder", "parser workers", "other")


def role(pid: int, root: int) -> str:
    if pid == root:
        return "pipeline"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    if "lorechat_pipeline.core.encoder_process" in command:
        return "encoder"
    if "multiprocessing" in command:  # the parser pool's spawned workers and its tracker
        return "parser workers"
    return "other"


def machine_ticks() -> tuple[int, int]:
    """Idle (with I/O wait) and stolen ticks of all CPUs since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return fields[3] + fields[4], fields[7]


def profile(source: Path, home: Path, lorechat: str, scratch: Path) -> dict[str, Any]:
    idle_before, stolen_before = machine_ticks()
    started = time.perf_counter()
    output = scratch / "ingest.json"
    with output.open("w") as stdout:
        process = subprocess.Popen(
            [lorechat, "ingest", "--json", str(source)],
            env={**os.environ, "LORECHAT_HOME": str(home)},
            stdout=stdout,
        )
        roles: dict[int, str] = {}
        ticks: dict[int, int] = {}
        samples: list[tuple[float, dict[str, int], int]] = []
        while process.poll() is None:
            stats = process_stats()
            for pid in [process.pid, *descendants(process.pid, stats)]:
                if pid in stats:
                    if pid not in roles:  # read its command line once
                        roles[pid] = role(pid, process.pid)
                    ticks[pid] = stats[pid].own_cpu_ticks
            by_role = Counter[str]()
            for pid, value in ticks.items():
                by_role[roles[pid]] += value
            samples.append((time.perf_counter() - started, dict(by_role), machine_ticks()[0]))
            time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    idle_after, stolen_after = machine_ticks()
    if process.returncode != 0:
        raise SystemExit(f"lorechat ingest failed with exit code {process.returncode}")
    cpu = samples[-1][1] if samples else {}  # each sample holds the totals so far
    return {
        "source": str(source),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": {name: round(cpu.get(name, 0) / CLOCK_TICKS, 1) for name in ROLES},
        "processes": dict(Counter(roles.values())),
        "idle_core_seconds": round((idle_after - idle_before) / CLOCK_TICKS, 1),
        "stolen_core_seconds": round((stolen_after - stolen_before) / CLOCK_TICKS, 1),
        "ingest": json.loads(output.read_text()),
        "samples": samples,
    }


def timeline(samples: list[tuple[float, dict[str, int], int]], window: float) -> list[str]:
    """CPU seconds per role and idle core-seconds in each window of `window` seconds."""
    totals: dict[int, Counter[str]] = {}
    previous = samples[0]
    for sample in samples[1:]:
        bucket = totals.setdefault(int(sample[0] // window), Counter())
        for name in ROLES:
            bucket[name] += sample[1].get(name, 0) - previous[1].get(name, 0)
        bucket["idle"] += sample[2] - previous[2]
        previous = sample
    lines = ["from s | " + " | ".join(f"{name:>14}" for name in (*ROLES, "idle"))]
    for index, bucket in sorted(totals.items()):
        cells = " | ".join(f"{bucket[name] / CLOCK_TICKS:14.1f}" for name in (*ROLES, "idle"))
        lines.append(f"{index * window:6.0f} | {cells}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="folder of documents to ingest")
    parser.add_argument("--home", type=Path, default=None, help="a fresh LORECHAT_HOME to keep")
    parser.add_argument("--timeline", type=float, default=None, help="also per window of N s")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    lorechat = str(Path(sys.executable).with_name("lorechat"))
    with tempfile.TemporaryDirectory(prefix="lorechat-profile-") as scratch:
        home = args.home or Path(scratch) / "home"
        if home.exists() and any(home.iterdir()):
            raise SystemExit(f"{home} is not empty: the profile is of an ingest from scratch")
        result = profile(args.source.resolve(), home, lorechat, Path(scratch))
    summary = {key: value for key, value in result.items() if key != "samples"}
    print(json.dumps(summary, indent=2))
    if args.timeline:
        print("\n".join(timeline(result["samples"], args.timeline)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Run one benchmark step in a subprocess of its own: its peak RSS, CPU time and any crash or
timeout stay its own, and a failure becomes a row of the report rather than the end of the run."""

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.processes import TreeMemory, kill_tree

REPO = Path(__file__).resolve().parents[1]
TREE_SAMPLE_SECONDS = 1.0


def run_isolated(
    module: str,
    arguments: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """`python -m MODULE ARGS --out FILE` in a new session; returns the JSON it wrote under
    "result", with the process tree's wall and CPU seconds, the peak RSS of its largest process
    and of the whole tree (see `TreeMemory`), or "error" when it crashed or timed out. A
    timeout, or this process being interrupted, kills the whole tree."""
    with tempfile.TemporaryDirectory(prefix="lorechat-bench-step-") as scratch:
        out = Path(scratch) / "result.json"
        log_path = log or Path(scratch) / "log.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", module, *arguments, "--out", str(out)]
        started = time.perf_counter()
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            timed_out = False
            deadline = started + timeout
            next_sample = started
            memory = TreeMemory(process.pid, module)
            try:
                while True:
                    memory.sample_root()
                    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                    if pid:
                        break
                    now = time.perf_counter()
                    if now >= next_sample:  # once a second: the walk of /proc costs ~2 ms
                        memory.sample_tree()
                        next_sample = now + TREE_SAMPLE_SECONDS
                    if now > deadline:
                        timed_out = True
                        kill_tree(process.pid)
                        pid, status, usage = os.wait4(process.pid, 0)
                        break
                    time.sleep(0.2)
            except BaseException:  # Ctrl-C, or SIGTERM made SystemExit: the step ends with us
                kill_tree(process.pid)
                process.wait()
                raise
            process.returncode = os.waitstatus_to_exitcode(status)
        outcome: dict[str, Any] = {
            "process_wall_seconds": round(time.perf_counter() - started, 2),
            "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            # None for a step that ended before it could be sampled; the whole tree is never
            # below its largest process (a short step may have no sample of the tree).
            "peak_rss_mb": _rounded(memory.largest_process_mb),
            "peak_tree_rss_mb": _rounded(
                max(memory.whole_tree_mb or 0.0, memory.largest_process_mb or 0.0) or None
            ),
            "exit_code": process.returncode,
        }
        if timed_out:
            outcome["error"] = f"timed out after {timeout:.0f} s"
        elif process.returncode != 0 or not out.exists():
            outcome["error"] = f"exit code {process.returncode}: " + tail(log_path)
        if out.exists():
            outcome["result"] = json.loads(out.read_text())
        return outcome


def _rounded(megabytes: float | None) -> float | None:
    return None if megabytes is None else round(megabytes, 1)


def tail(path: Path, lines: int = 6, width: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    kept = [line for line in text if line.strip()][-lines:]
    return " | ".join(kept)[-width:]

"""Run one benchmark step in a subprocess of its own: its peak RSS, CPU time and any crash or
timeout stay its own, and a failure becomes a row of the report rather than the end of the run."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_isolated(
    module: str,
    arguments: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """`python -m MODULE ARGS --out FILE` in a new session; returns the JSON it wrote under
    "result", with the process tree's wall and CPU seconds and the peak RSS of its largest process
    (from wait4), or "error" when it crashed or timed out."""
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
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    os.killpg(process.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.2)
            process.returncode = os.waitstatus_to_exitcode(status)
        outcome: dict[str, Any] = {
            "process_wall_seconds": round(time.perf_counter() - started, 2),
            "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "exit_code": process.returncode,
        }
        if timed_out:
            outcome["error"] = f"timed out after {timeout:.0f} s"
        elif process.returncode != 0 or not out.exists():
            outcome["error"] = f"exit code {process.returncode}: " + tail(log_path)
        if out.exists():
            outcome["result"] = json.loads(out.read_text())
        return outcome


def tail(path: Path, lines: int = 6, width: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    kept = [line for line in text if line.strip()][-lines:]
    return " | ".join(kept)[-width:]

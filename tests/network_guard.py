"""The opening of a script run in a fresh interpreter to prove it needs no network: every way out
(sockets, name lookups, urllib) raises and is recorded in `attempts`, which the script reports.
A raise alone is not enough, since some libraries (unstructured's telemetry thread) swallow it.
The processes the script starts are guarded too (`network_guard_site/sitecustomize.py`), and
their attempts are added to the report's."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GUARD_SITE = Path(__file__).resolve().parent / "network_guard_site"

NETWORK_GUARD = r"""
import json, os, sys, urllib.request

os.environ["NETWORK_GUARD_ROOT"] = str(os.getpid())  # its children guard themselves
attempts = []
NETWORK_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"}

def audit(event, args):
    if event in NETWORK_EVENTS:
        attempts.append([event, repr(args)[:200]])
        raise ConnectionRefusedError(f"no network in this test ({event})")

sys.addaudithook(audit)

def urlopen(*args, **kwargs):
    attempts.append(["urllib.request.urlopen", repr(args)[:200]])
    raise ConnectionRefusedError("no network in this test (urlopen)")

urllib.request.urlopen = urlopen
"""


def run_guarded(script: str, *arguments: str, unset: tuple[str, ...]) -> dict[str, Any]:
    """Run a NETWORK_GUARD script in a fresh interpreter from the repository, without the
    variables in `unset` (the ones that would make it offline by configuration rather than by
    design), and return the JSON object it printed last, with the attempts of the processes it
    started added to its `attempts` (as [pid, event, arguments])."""
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(GUARD_SITE)])
    log = Path(tempfile.mkdtemp(prefix="network-guard-")) / "attempts.jsonl"
    log.touch()
    environment["NETWORK_GUARD_LOG"] = str(log)
    completed = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    children = [json.loads(line) for line in log.read_text().splitlines()]
    shutil.rmtree(log.parent)
    if "attempts" in report:
        report["attempts"] = report["attempts"] + children
    return report

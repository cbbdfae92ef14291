"""The opening of a script run in a fresh interpreter to prove it needs no network: every way out
(sockets, name lookups, urllib) raises and is recorded in `attempts`, which the script reports.
A raise alone is not enough, since some libraries (unstructured's telemetry thread) swallow it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

NETWORK_GUARD = r"""
import json, os, sys, urllib.request

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
    design), and return the JSON object it printed last."""
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    environment["PYTHONPATH"] = str(REPO_ROOT)
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
    return report

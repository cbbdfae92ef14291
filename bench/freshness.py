"""Freshness under `lorechat dev`: how long from a file landing in the watched folder until the
current index answers with it.

    .venv/bin/python bench/freshness.py [--documents N] [--interval S] [--spacing S] [--port P]

The ingest benchmark measures throughput of one `lorechat ingest`; this one measures what a user
of the always-on set-up waits for: the source listing sensor's interval, the run queue, a run
process per shard (torch, the model and a parser worker each time) and the alias. It starts
`lorechat dev` on the local default (a temporary LORECHAT_HOME, the source a temporary folder),
drops N small distinct markdown documents into the folder one at a time, `--spacing` seconds
apart, and polls the index the alias names until each has a row. It prints one JSON object:
documents, sensor interval, p50/p95/max latency in seconds (p95 by nearest rank) and whether the
target, p50 ≤ interval + 15 s, is met.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from lorechat_pipeline.core.vector_index import IndexNotFound, sql_in
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings

LORECHAT_BIN = Path(sys.executable).with_name("lorechat")
# What the sensor interval may add on average (half of it) plus a run's own start-up and work.
TARGET_MARGIN_SECONDS = 15.0
RUNS_QUERY = """
query IngestRuns {
  runsOrError(filter: {pipelineName: "ingest_job"}) {
    ... on Runs { results { status } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """`dagster dev` maps SIGTERM onto SIGINT's handler, so a SIGINT ignored since a shell's
    background job (and inherited across exec) would make it ignore SIGTERM too. A handled
    signal is reset to the default in the child, an ignored one is not."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_dev(env: dict[str, str], port: int, workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out, sigint_not_ignored():
        return subprocess.Popen(
            [str(LORECHAT_BIN), "dev", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM to the whole group (webserver, daemon, code servers, runs), SIGKILL after grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_until_ready(process: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`lorechat dev` exited with {process.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/server_info", timeout=2).ok:
                return
        time.sleep(1)
    raise RuntimeError(f"the Dagster webserver did not answer within {timeout:.0f} s")


def ingest_run_statuses(url: str) -> dict[str, int]:
    response = requests.post(f"{url}/graphql", json={"query": RUNS_QUERY}, timeout=30)
    response.raise_for_status()
    counts: dict[str, int] = {}
    for run in response.json()["data"]["runsOrError"].get("results", []):
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    return counts


def searchable(pipeline: Pipeline, documents: list[str]) -> set[str]:
    """Those of `documents` with a row in the index the alias names right now."""
    try:
        index = pipeline.open_current_index()
    except IndexNotFound:  # nothing promoted yet: the first run has not finished
        return set()
    rows = index.rows(sql_in("document", documents), ["document"])
    return set(rows.column("document").to_pylist())


def drop(source: Path, staging: Path, number: int) -> str:
    """Write one small distinct document and move it into the watched folder in one rename, so
    the sensor never lists it half written."""
    token = uuid.uuid4().hex[:10]
    name = f"probe-{number:03d}-{token}.md"
    staged = staging / name
    staged.write_text(
        f"# Freshness probe {number}\n\n"
        f"Probe {token} checks how quickly a new file in the watched folder becomes searchable. "
        f"It is document number {number} of this run and mentions the code word {token}.\n"
    )
    os.replace(staged, source / name)
    return name


def nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    home, source, staging = workdir / "home", workdir / "source", workdir / "staging"
    for folder in (source, staging):
        folder.mkdir(parents=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("LORECHAT_") and name != "DAGSTER_HOME"
    }
    env |= {
        "LORECHAT_HOME": str(home),
        "LORECHAT_SOURCE": str(source),
        "LORECHAT_SENSOR_INTERVAL_SECONDS": str(args.interval),
    }
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "dagster-dev.log"
    pipeline = Pipeline.from_settings(load_settings(home=home, source=str(source)))
    dropped: dict[str, float] = {}  # document → when it landed in the folder
    found: dict[str, float] = {}  # document → seconds until it was searchable
    process = start_dev(env, port, workdir, log)
    try:
        # The model the index check needs loads while Dagster starts, not during the drops.
        pipeline.embedder.embed_query("warm up")
        started = time.monotonic()
        wait_until_ready(process, url, args.startup_timeout)
        ready_seconds = time.monotonic() - started

        next_drop = time.monotonic()
        while len(found) < args.documents:
            now = time.monotonic()
            if len(dropped) < args.documents and now >= next_drop:
                dropped[drop(source, staging, len(dropped) + 1)] = time.monotonic()
                next_drop += args.spacing
            pending = [name for name in dropped if name not in found]
            if pending:
                for name in searchable(pipeline, pending):
                    found[name] = time.monotonic() - dropped[name]
                    print(f"{name}: searchable after {found[name]:.1f} s", file=sys.stderr)
            if process.poll() is not None:
                raise RuntimeError(f"`lorechat dev` exited with {process.returncode}")
            late = [n for n in pending if n not in found and now - dropped[n] > args.timeout]
            if late:
                print(f"not searchable within {args.timeout:.0f} s: {late}", file=sys.stderr)
                break
            time.sleep(args.poll)
        runs = ingest_run_statuses(url)
    except BaseException:
        tail = log.read_text(errors="replace").splitlines()[-60:] if log.exists() else []
        print("--- tail of the `lorechat dev` log ---", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        stop_process_group(process)
        pipeline.close()

    latencies = list(found.values())
    target = args.interval + TARGET_MARGIN_SECONDS
    p50 = statistics.median(latencies) if latencies else None
    return {
        "documents": args.documents,
        "searchable": len(latencies),
        "sensor_interval_seconds": args.interval,
        "spacing_seconds": args.spacing,
        "latency_seconds": {
            "p50": round(p50, 1) if p50 is not None else None,
            "p95": round(nearest_rank(latencies, 0.95), 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        },
        # In drop order; null for a document that never became searchable.
        "latencies_seconds": [round(found[name], 1) if name in found else None for name in dropped],
        "target": {"p50_at_most_seconds": target},
        "met": p50 is not None and len(latencies) == args.documents and p50 <= target,
        "ingest_runs": runs,
        "webserver_ready_seconds": round(ready_seconds, 1),
        "parse_workers": pipeline.settings.parse_workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=20, help="documents to drop")
    parser.add_argument("--interval", type=int, default=30, help="LORECHAT_SENSOR_INTERVAL_SECONDS")
    parser.add_argument("--spacing", type=float, default=5.0, help="seconds between drops")
    parser.add_argument("--port", type=int, default=0, help="webserver port (default: a free one)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between index checks")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up on a document after this long"
    )
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (and its log)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lorechat-freshness-"))
    try:
        figures = measure(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""Sustained load on `/v1/search` with an index version switch in the middle.

    .venv/bin/python bench/soak.py [--rows 100000] [--clients 64] [--seconds 300]

Builds the `bench/serve.py` index (`--rows` chunks), starts `python -m serving` on loopback,
measures the unloaded latency (one client), then runs `--clients` concurrent clients for
`--seconds` (hybrid and dense searches alternating; a client told 429 waits its
Retry-After) while, half way through, a new index version
(a copy of the current one) is promoted through the alias. It samples the server's resident
memory every 5 s and prints one JSON object: answers by status and error code, transport errors,
latency of the answered searches against the unloaded p99, the index versions answered from, and
memory growth from the first sample after warm-up to the last. Targets (issue 8): zero 5xx, p99
within 3× the unloaded p99, memory growth under 10%.
"""

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from serve import TOPICS, build_index, percentiles, serving_process

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.embedding import SentenceTransformerEmbedder
from lorechat_pipeline.core.storage import LocalObjectStore
from serving.query_encoder import build_query_embedder
from serving.settings import ServingSettings


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lorechat-soak-"))
    uri = build_index(root, args.rows, SentenceTransformerEmbedder())
    build_query_embedder(ServingSettings(home=root, query_encoder_dir=root / "query-encoder"))
    queries = [f"steps to follow for {topic} variant {n}" for topic in TOPICS for n in range(9)]
    settings = {
        "LORECHAT_INDEX_URI": uri,
        "LORECHAT_RATE_LIMIT_PER_MINUTE": "1000000",
        "LORECHAT_QUERY_ENCODER_DIR": str(root / "query-encoder"),
        "LORECHAT_ALIAS_CHECK_SECONDS": "1",
    }
    try:
        with serving_process(settings) as (url, pid):
            report = soak(url, pid, uri, queries, args.clients, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"rows": args.rows, **report}, indent=2))


def soak(
    url: str, pid: int, uri: str, queries: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30) as session:
        unloaded = []
        for number in range(200):
            started = time.perf_counter()
            body = {
                "query": queries[number % len(queries)],
                "mode": ("dense", "hybrid")[number % 2],
            }
            session.post("/v1/search", json=body).raise_for_status()
            unloaded.append(time.perf_counter() - started)
    statuses: Counter[str] = Counter()
    served: list[float] = []
    versions: Counter[str] = Counter()
    memory: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as session:
            while not stop.is_set():
                body = {
                    "query": queries[number % len(queries)],
                    "mode": ("dense", "hybrid")[number % 2],
                }
                started = time.perf_counter()
                try:
                    response = session.post("/v1/search", json=body)
                except httpx.HTTPError as error:
                    with lock:
                        statuses[f"transport {type(error).__name__}"] += 1
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        served.append(elapsed)
                        versions[response.json()["index_version"]] += 1
                        statuses["200"] += 1
                    else:
                        statuses[f"{response.status_code} {response.json()['error']['code']}"] += 1
                if response.status_code == 429:
                    # As a well-behaved client does: come back when told to.
                    stop.wait(float(response.headers.get("retry-after", "1")))
                number += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    aliases = AliasStore(LocalObjectStore(uri))
    switched = False
    while time.monotonic() - started < seconds:
        time.sleep(5)
        memory.append(resident_mb(pid))
        if not switched and time.monotonic() - started >= seconds / 2:
            current = aliases.current_table() or ""
            shutil.copytree(Path(uri) / f"{current}.lance", Path(uri) / f"{current}_next.lance")
            aliases.promote(f"{current}_next", reason="soak benchmark")
            switched = True
    stop.set()
    for thread in threads:
        thread.join()
    unloaded_p = percentiles(unloaded)
    served_p = percentiles(served)
    # The first samples include warm-up (caches, the thread pool growing to the clients).
    baseline = memory[min(2, len(memory) - 1)]
    return {
        "clients": clients,
        "seconds": seconds,
        "answers": dict(statuses),
        "server_errors": sum(n for status, n in statuses.items() if status.startswith("5")),
        "requests_per_second": round(statuses["200"] / seconds, 1),
        "unloaded": unloaded_p,
        "answered": served_p,
        "p99_over_unloaded_p99": round(served_p["p99_ms"] / unloaded_p["p99_ms"], 2),
        "versions_answered_from": dict(versions),
        "rss_mb": {"after_warm_up": round(baseline, 1), "end": round(memory[-1], 1)},
        "rss_growth_percent": round(100 * (memory[-1] - baseline) / baseline, 1),
    }


if __name__ == "__main__":
    main()

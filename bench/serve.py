"""Search latency and throughput of the serving API over HTTP, against the in-process floor.

    .venv/bin/python bench/serve.py [--rows 100000] [--clients 16] [--seconds 20]

Builds an index of `--rows` chunks (real embeddings of a base set of passages, spread into
near-duplicates with small noise so the vector distribution stays realistic, then the IVF_FLAT
and full-text indexes the pipeline builds), starts `python -m serving` on loopback (a real uvicorn
process), drives `/v1/search` in dense and hybrid modes with one client (latency on an idle
server) and with `--clients` concurrent clients (throughput), and prints p50/p95/p99 latency and
requests/s beside the in-process floor (embed + index search, no HTTP)
measured in the same run, with the query encoder the server runs (ONNX by default).
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
import pyarrow as pa

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.embedding import Embedder, SentenceTransformerEmbedder
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.records import index_schema
from lorechat_pipeline.core.storage import LocalObjectStore
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from serving.query_encoder import build_query_embedder
from serving.settings import ServingSettings

TOPICS = [
    "solar panels",
    "green tea",
    "bicycle repair",
    "payroll",
    "parking",
    "passwords",
    "printers",
    "annual leave",
    "office plants",
    "boiler pressure",
    "fire drills",
    "expense claims",
    "laptop setup",
    "visitor badges",
    "meeting rooms",
    "travel booking",
    "pension scheme",
    "parental leave",
    "data retention",
    "incident response",
]


def base_passages(count: int) -> list[str]:
    passages = []
    for number in range(count):
        topic = TOPICS[number % len(TOPICS)]
        passages.append(
            f"Section {number} on {topic}: the handbook explains how {topic} works in practice, "
            f"who to contact about {topic}, and the steps to follow, variant {number // 20}."
        )
    return passages


def build_index(root: Path, rows: int, embedder: SentenceTransformerEmbedder) -> str:
    base = base_passages(2000)
    vectors = embedder.embed_documents(base)
    rng = np.random.default_rng(7)
    picks = rng.integers(0, len(base), rows)
    noisy = vectors[picks] + rng.normal(0, 0.02, (rows, vectors.shape[1])).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    manifest = IndexManifest(
        embedder.model_id, embedder.dimension, "cosine", True, "bench", "synthetic passages"
    )
    uri = str(root / "index")
    index = LanceVectorIndex.open_or_create(uri, manifest)
    texts = [f"{base[p]} Copy {i}." for i, p in enumerate(picks)]
    table = pa.table(
        {
            "chunk_id": [f"doc{i // 10:06d}#{i % 10:05d}-bench" for i in range(rows)],
            "document_id": [f"doc{i // 10:06d}" for i in range(rows)],
            "document": [
                f"handbook/{TOPICS[p % len(TOPICS)]}/{i // 10}.md" for i, p in enumerate(picks)
            ],
            "collection": ["handbook"] * rows,
            "shard": [f"shard-{i % 16:03d}" for i in range(rows)],
            "source_version": ["v1"] * rows,
            "content_hash": ["h"] * rows,
            "content_fp": ["f"] * rows,
            "content_type": ["text/markdown"] * rows,
            "ordinal": [i % 10 for i in range(rows)],
            "text": texts,
            "title": [TOPICS[p % len(TOPICS)] for p in picks],
            "page_number": [None] * rows,
            "section": [None] * rows,
            "element_types": [["NarrativeText"]] * rows,
            "user_metadata": [None] * rows,
            "chunker_version": ["bench"] * rows,
            "embedding_model": [embedder.model_id] * rows,
            "vector": list(noisy),
        },
        schema=index_schema(embedder.dimension),
    )
    index.table.add(table)
    index.maintain(ann_index_min_rows=min(rows, 100_000))
    AliasStore(LocalObjectStore(uri)).promote(index.name, reason="benchmark")
    return uri


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99)}


def drive(
    url: str, mode: str, clients: int, seconds: float, queries: list[str]
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(number: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=30) as session:
            position = number
            while time.perf_counter() < stop_at:
                body = {"query": queries[position % len(queries)], "k": 10, "mode": mode}
                started = time.perf_counter()
                response = session.post("/v1/search", json=body)
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors += 1
                position += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_second": round(len(latencies) / seconds, 1),
        **percentiles(latencies),
    }


def floor(uri: str, embedder: Embedder, queries: list[str]) -> dict[str, Any]:
    """Embed + search in this process, one query at a time: what HTTP and concurrency add to."""
    from serving.search import SearchMode, search

    index = LanceVectorIndex.open(uri, AliasStore(LocalObjectStore(uri)).current_table() or "")
    result: dict[str, Any] = {}
    encode = []
    for query in queries:
        started = time.perf_counter()
        embedder.embed_query(query)
        encode.append(time.perf_counter() - started)
    result["query_encode"] = percentiles(encode)
    for mode in (SearchMode.DENSE, SearchMode.HYBRID):
        samples = []
        for query in queries:
            started = time.perf_counter()
            search(index, mode, query, embedder.embed_query(query), 10, None)
            samples.append(time.perf_counter() - started)
        result[mode.value] = percentiles(samples)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving_process(settings: dict[str, str]) -> Iterator[tuple[str, int]]:
    """`python -m serving` on a free loopback port with these extra variables, in its own
    process group: yields (url, pid) once /readyz answers, and stops the group after."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port)],
        env={**os.environ, **settings},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.5)
        yield url, server.pid
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lorechat-serve-bench-"))
    embedder = SentenceTransformerEmbedder()
    started = time.perf_counter()
    uri = build_index(root, args.rows, embedder)
    build_seconds = time.perf_counter() - started
    queries = [f"who do I contact about {topic}?" for topic in TOPICS]
    queries += [f"steps to follow for {topic} variant {n}" for topic in TOPICS for n in range(9)]

    # The query encoder the server runs (ONNX by default), exported once for both.
    serving_settings = ServingSettings(home=root, query_encoder_dir=root / "query-encoder")
    query_embedder = build_query_embedder(serving_settings)
    env = {
        "LORECHAT_INDEX_URI": uri,
        "LORECHAT_RATE_LIMIT_PER_MINUTE": "1000000",
        "LORECHAT_QUERY_ENCODER_DIR": str(root / "query-encoder"),
        # Capacity, not admission control, is measured here: every request is queued and
        # answered (bench/soak.py measures the server turning a burst away).
        "LORECHAT_MAX_SEARCHES_IN_FLIGHT": str(args.clients),
        "LORECHAT_SEARCH_QUEUE_SECONDS": "60",
    }
    with serving_process(env) as (url, _):
        drive(url, "dense", 2, 3, queries)  # warm caches
        report = {
            "rows": args.rows,
            "index_build_seconds": round(build_seconds, 1),
            "clients": args.clients,
            "seconds_per_mode": args.seconds,
            # Latency as one caller sees it on an idle server, then throughput and latency
            # under `--clients` concurrent callers (where latency is mostly queueing).
            "http_one_client": {
                mode: drive(url, mode, 1, args.seconds, queries) for mode in ("dense", "hybrid")
            },
            "http": {
                mode: drive(url, mode, args.clients, args.seconds, queries)
                for mode in ("dense", "hybrid")
            },
            "query_encoder": type(query_embedder).__name__,
            "in_process_floor": floor(uri, query_embedder, queries),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

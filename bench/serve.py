"""Search latency and throughput of the serving API over HTTP, against the in-process floor.

    .venv/bin/python bench/serve.py [--rows 100000] [--clients 16] [--seconds 20] [--index DIR]
        [--workers 2]

Builds an index of `--rows` chunks (real embeddings of a base set of passages, spread into
near-duplicates with small noise so the vector distribution stays realistic, then the IVF_FLAT
and full-text indexes the pipeline builds), starts `python -m serving` on loopback (real uvicorn
processes: `--workers` of them, one per core of the reference machine by default), drives
`/v1/search` in dense and hybrid modes with one client (latency on an idle server) and with
`--clients` concurrent clients (throughput), and prints p50/p95/p99 latency and requests/s
beside the in-process floor (embed + index search, no HTTP) measured in the same run, with the
query encoder the server runs (ONNX by default).
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
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


async def _client(
    host: str,
    port: int,
    requests: list[bytes],
    stop_at: float,
    latencies: list[float],
    failures: list[int],
) -> None:
    """One keep-alive connection sending requests back to back. Written on raw streams: a
    general-purpose client spends more CPU per request than the server under test, on the same
    two cores."""
    reader, writer = await asyncio.open_connection(host, port)
    position = 0
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(requests[position % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            (latencies.append(elapsed) if status == 200 else failures.append(status))
            position += 1
    finally:
        writer.close()


def drive(
    url: str, mode: str, clients: int, seconds: float, queries: list[str]
) -> dict[str, float]:
    """`clients` connections searching back to back for `seconds`: latency and requests/s."""
    host, port = url.removeprefix("http://").split(":")
    requests = []
    for query in queries:
        body = json.dumps({"query": query, "k": 10, "mode": mode}).encode()
        requests.append(
            f"POST /v1/search HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    latencies: list[float] = []
    failures: list[int] = []

    async def run() -> None:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(
                _client(host, int(port), requests[n:] + requests[:n], stop_at, latencies, failures)
                for n in range(clients)
            )
        )

    asyncio.run(run())
    return {
        "requests": len(latencies),
        "errors": len(failures),
        "requests_per_second": round(len(latencies) / seconds, 1),
        **percentiles(latencies),
    }


def floor(uri: str, embedder: Embedder, queries: list[str]) -> dict[str, Any]:
    """Embed + search in this process, one query at a time: what HTTP and concurrency add to.
    Dense search both ways the server can answer it (its in-memory copy; LanceDB, which answers
    filtered searches), and the copy's recall@10 against exact search over every vector."""
    from threadpoolctl import threadpool_limits

    from serving.resident import ResidentVectors, vectors_of
    from serving.search import RESULT_COLUMNS, SearchMode, resident_dense, search

    threadpool_limits(1, user_api="blas")  # as the server runs
    index = LanceVectorIndex.open(uri, AliasStore(LocalObjectStore(uri)).current_table() or "")
    data = index.rows(None, [*RESULT_COLUMNS, "vector"])
    vectors = vectors_of(data)
    started = time.perf_counter()
    resident = ResidentVectors((index.name, 0), vectors, data.drop_columns(["vector"]))
    result: dict[str, Any] = {"resident_build_seconds": round(time.perf_counter() - started, 2)}
    query_vectors = []
    encode = []
    for query in queries:
        started = time.perf_counter()
        query_vectors.append(embedder.embed_query(query))
        encode.append(time.perf_counter() - started)
    result["query_encode"] = percentiles(encode)
    exact_ids = data.column("chunk_id").to_pylist()
    recalls = []
    for vector in query_vectors:
        exact = {exact_ids[row] for row in np.argsort(-(vectors @ vector))[:10]}
        found = resident_dense(resident, vector, 10, None) or []
        recalls.append(len(exact & {hit.chunk_id for hit in found}) / 10)
    result["resident_recall_at_10"] = round(float(np.mean(recalls)), 4)
    ways = {
        "dense_resident": (SearchMode.DENSE, resident),
        "dense_lancedb": (SearchMode.DENSE, None),
        "hybrid": (SearchMode.HYBRID, resident),
    }
    timings: dict[str, list[float]] = {name: [] for name in ways}
    for query, vector in zip(queries, query_vectors, strict=True):
        for name, (mode, copy) in ways.items():
            started = time.perf_counter()
            search(index, mode, query, vector, 10, None, resident=copy)
            timings[name].append(time.perf_counter() - started)
    result["search_without_encode"] = {
        name: percentiles(samples) for name, samples in timings.items()
    }
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


def wait_for_resident_copy(
    url: str, timeout: float = 600, key: str | None = None, workers: int = 1
) -> None:
    """The server copies the served version into memory in the background: measure once it has
    (until then LanceDB answers, slower): each of its `workers` processes builds its own, and
    a new connection reaches any of them."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ready: set[int] = set()
    while True:
        index = httpx.get(url + "/v1/index", timeout=30, headers=headers).json()
        if index["resident_rows"] == index["chunks"]:
            ready.add(index["worker_pid"])
            if len(ready) >= workers:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the server never built its in-memory copy")
        time.sleep(0.05 if ready else 0.5)  # soon: the next connection may reach another worker


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server processes (LORECHAT_WORKERS): one per core, as the container runs",
    )
    parser.add_argument(
        "--index",
        help="an index folder to serve (its alias's current version) instead of building one",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lorechat-serve-bench-"))
    started = time.perf_counter()
    if args.index:
        uri = args.index
        current = AliasStore(LocalObjectStore(uri)).current_table() or ""
        args.rows = LanceVectorIndex.open(uri, current).count()
    else:
        uri = build_index(root, args.rows, SentenceTransformerEmbedder())
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
        "LORECHAT_WORKERS": str(args.workers),
    }
    with serving_process(env) as (url, _):
        wait_for_resident_copy(url, workers=args.workers)
        drive(url, "dense", 2, 3, queries)  # warm caches
        report = {
            "rows": args.rows,
            "index_build_seconds": None if args.index else round(build_seconds, 1),
            "clients": args.clients,
            "workers": args.workers,
            "seconds_per_mode": args.seconds,
            # Latency as one caller sees it on an idle server, then throughput and latency
            # under `--clients` concurrent callers (where latency is mostly queueing).
            "http_one_client": {
                mode: drive(url, mode, 1, args.seconds, queries) for mode in ("dense", "hybrid")
            },
            # Two: both cores busy with little queueing, where latency and throughput targets
            # meet.
            "http_two_clients": {
                mode: drive(url, mode, 2, args.seconds, queries) for mode in ("dense", "hybrid")
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

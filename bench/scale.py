"""Index build time, memory and dense query latency and recall@10 (against exact search) at one
size of synthetic vectors, built as the pipeline builds its index and searched through the
serving code path: `python -m bench.scale --rows N --out FILE` (bench/compare.py runs one
process per size, so each size's peak RSS is its own).

Vectors: unit-normalised points around 2,000 random centres (clustered like real embeddings,
where uniform random 384-d vectors would make every IVF partition equally near); queries are new
points around the same centres.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.ingest import current_rss_mb
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.records import index_schema
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from lorechat_pipeline.settings import load_settings
from serving.search import DEFAULT_NPROBES, dense

DIMENSION = 384
CENTRES = 2000
NOISE = 0.35  # per-coordinate spread relative to the centre, before normalising
BATCH = 100_000


def points(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    picks = rng.integers(0, len(centres), count)
    scale = NOISE / np.sqrt(DIMENSION)
    vectors = centres[picks] + rng.normal(0, scale, (count, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def batch_table(start: int, vectors: np.ndarray) -> pa.Table:
    schema = index_schema(DIMENSION)
    count = len(vectors)
    ids = [f"doc{(start + i) // 10:07d}" for i in range(count)]
    values = {
        "chunk_id": [f"{d}#{(start + i) % 10}" for i, d in enumerate(ids)],
        "document_id": ids,
        "document": [f"{d}.md" for d in ids],
        "collection": ["scale"] * count,
        "shard": [f"shard-{(start + i) % 16:03d}" for i in range(count)],
        "content_hash": ["h"] * count,
        "content_fp": ["f"] * count,
        "ordinal": [(start + i) % 10 for i in range(count)],
        "text": [f"synthetic chunk {start + i}" for i in range(count)],
        "chunker_version": ["scale"] * count,
        "embedding_model": ["synthetic"] * count,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIMENSION),
    }
    columns = [
        values[field.name] if field.name in values else pa.nulls(count, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def exact_top10(data: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    """Brute force: the rows of the 10 highest cosine similarities per query."""
    scores = queries @ data.T
    return [set(row.tolist()) for row in np.argpartition(-scores, 10, axis=1)[:, :10]]


def measure_resident_copy(
    data: np.ndarray, queries: np.ndarray, truth: list[set[int]]
) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    from serving.resident import ResidentVectors

    threadpool_limits(1, user_api="blas")  # as the server runs
    rows = pa.table(
        {
            "row": np.arange(len(data)),
            # Ids as the pipeline makes them (document digest # ordinal): the copy ranks them.
            "chunk_id": [f"{row // 10:016x}#{row % 10:05d}" for row in range(len(data))],
            "collection": ["scale"] * len(data),
        }
    )
    before = current_rss_mb()
    started = time.perf_counter()
    copy = ResidentVectors(("scale", 1), data, rows)
    build_seconds = time.perf_counter() - started
    latencies, recalls = [], []
    for number, query in enumerate(queries):
        t0 = time.perf_counter()
        found = copy.search(query, 10) or []
        latencies.append(time.perf_counter() - t0)
        rows_found = {int(row["row"]) for row in copy.result_rows(found)}
        recalls.append(len(rows_found & truth[number]) / 10)
    ordered = sorted(latencies)
    return {
        "build_seconds": round(build_seconds, 2),
        "lists": len(copy.bounds) - 1,
        "probed": copy.probes,
        "mb": round(copy.nbytes / 2**20, 1),
        "rss_mb_added": round(current_rss_mb() - before, 1),
        "query_p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "query_p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
        "recall_at_10": round(float(np.mean(recalls)), 4),
    }


def row_of(chunk_id: str) -> int:
    document, ordinal = chunk_id.split("#")
    return int(document.removeprefix("doc")) * 10 + int(ordinal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobes", type=int, default=DEFAULT_NPROBES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    rng = np.random.default_rng(11)
    centres = rng.normal(0, 1, (CENTRES, DIMENSION)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = points(rng, centres, args.rows)
    queries = points(rng, centres, args.queries)
    rss_data = current_rss_mb()

    root = Path(tempfile.mkdtemp(prefix="lorechat-scale-"))
    try:
        manifest = IndexManifest("synthetic", DIMENSION, "cosine", True, "scale", "synthetic")
        index = LanceVectorIndex.open_or_create(str(root / "index"), manifest)
        ann_min_rows = load_settings().ann_index_min_rows
        started = time.perf_counter()
        for start in range(0, args.rows, BATCH):
            index.table.add(batch_table(start, data[start : start + BATCH]))
        write_seconds = time.perf_counter() - started
        built = index.maintain(ann_index_min_rows=ann_min_rows)
        build_seconds = time.perf_counter() - started
        rss_built = current_rss_mb()

        truth = exact_top10(data, queries)
        latencies, recalls = [], []
        dense(index, queries[0], 10, None, nprobes=args.nprobes)  # warm the caches
        for number, query in enumerate(queries):
            t0 = time.perf_counter()
            hits = dense(index, query, 10, None, nprobes=args.nprobes)
            latencies.append(time.perf_counter() - t0)
            recalls.append(len({row_of(hit.chunk_id) for hit in hits} & truth[number]) / 10)
        resident = measure_resident_copy(data, queries, truth)
        disk = sum(f.stat().st_size for f in (root / "index").rglob("*") if f.is_file())
        ordered = sorted(latencies)
        result = {
            "rows": args.rows,
            "indexes_built": built,
            "ann_index": "ivf_flat(vector)" in built,
            "nprobes": args.nprobes,
            "write_seconds": round(write_seconds, 2),
            "build_seconds": round(build_seconds, 2),
            "index_mb_on_disk": round(disk / 2**20, 1),
            "rss_mb_vectors_in_memory": round(rss_data, 1),
            "rss_mb_after_build": round(rss_built, 1),
            "query_p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "query_p99_ms": round(
                ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2
            ),
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "queries": args.queries,
            # The serving container's in-memory copy (serving/resident.py), for a version within
            # LORECHAT_RESIDENT_VECTORS_MB: what it costs and how it searches at this size.
            "resident_copy": resident,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

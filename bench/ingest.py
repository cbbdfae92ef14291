"""Ingestion throughput against the raw encode ceiling of the same model on the same chunks.

    .venv/bin/python bench/ingest.py DOCS_FOLDER [--limit N] [--home DIR] [--json OUT]

Prints, in one run: documents, chunks, seconds, chunks/s, the raw encode throughput of the same
model on the same chunks (the ceiling), their ratio, the unchanged re-run time and its ratio to the
full run, peak RSS (this process and its largest child process) and the resident size after each
shard (flat when memory is bounded by streaming rather than by corpus size).

With the local model, the ceiling is measured for each of its encoders (the pipeline's settings,
`LORECHAT_LOCAL_ENCODER` choosing which one ingests; all keep the parity bound, cosine ≥ 0.9999
against torch): the ratio is taken against the fastest of them, the others printed beside it.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.processes import descendants, descendants_cpu_seconds, resident_kb


def cpu_seconds() -> float:
    """CPU time of this process and all it started: reaped children from rusage, and the ones
    still running (the parser pool's workers live across the whole ingest) from /proc."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return reaped + descendants_cpu_seconds(os.getpid())


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident size of this process and of its largest running child (the parser
    workers, the encoder's process): the kernel's high-water marks, not rusage's `ru_maxrss`,
    which gives a child the size its parent had when it started it."""
    own = resident_kb(os.getpid())
    children = [resident_kb(pid) for pid in descendants(os.getpid())]
    largest_child = max((child[1] for child in children if child), default=0)
    return (own[1] if own else 0) / 1024, largest_child / 1024


def current_rss_mb() -> float:
    # Resident now (not the peak): a series of these shows whether memory grows with the corpus.
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def prepare_source(folder: Path, limit: int | None, workdir: Path) -> Path:
    if limit is None:
        return folder
    files = sorted(p for p in folder.rglob("*") if p.is_file())[:limit]
    target = workdir / "source"
    for path in files:
        destination = target / path.relative_to(folder)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    return target


def encode_ceilings(pipeline: Any, texts: list[str]) -> dict[str, float]:
    """Seconds to encode `texts` in one call, per encoder of the pipeline's model (warmed up)."""
    from lorechat_pipeline.defs.resources import embedder_resource
    from lorechat_pipeline.settings import EmbedderKind, LocalEncoder

    settings = pipeline.settings
    if settings.backends.embedder is not EmbedderKind.LOCAL:
        encoders = {"configured": pipeline.embedder}
    else:
        encoders = {
            encoder.value: embedder_resource(
                settings.model_copy(update={"local_encoder": encoder})
            ).get_embedder()
            for encoder in LocalEncoder
        }
    seconds = {}
    for name, encoder in encoders.items():
        encoder.embed_documents(["warm up the model before timing"])
        started = time.perf_counter()
        encoder.embed_documents(texts)
        seconds[name] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument(
        "--home", type=Path, default=None, help="LORECHAT_HOME (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    # Imported here: bench/compare.py's peer workers reuse this module's helpers without
    # loading our pipeline (and Dagster) into their own measured processes.
    from lorechat_pipeline.runner import Pipeline
    from lorechat_pipeline.settings import load_settings

    workdir = Path(tempfile.mkdtemp(prefix="lorechat-bench-"))
    source = prepare_source(args.folder.resolve(), args.limit, workdir)
    home = args.home or workdir / "home"
    pipeline = Pipeline.from_settings(load_settings(home=home, source=str(source)))
    embedder = pipeline.embedder
    embedder.embed_documents(["warm up the model before timing"])

    rss_after_shards: list[float] = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    full = pipeline.ingest(on_shard_done=lambda _: rss_after_shards.append(current_rss_mb()))
    full_seconds = time.perf_counter() - wall0
    full_cpu = cpu_seconds() - cpu0
    ingest_rss, _ = peak_rss_mb()

    texts = pipeline.open_index().rows(None, ["text"]).column("text").to_pylist()
    ceilings = encode_ceilings(pipeline, texts)
    # Against the fastest encoder of the model's vectors.
    ceiling_seconds = min(ceilings.values())

    wall1 = time.perf_counter()
    rerun = pipeline.ingest()
    rerun_seconds = time.perf_counter() - wall1
    own_rss, child_rss = peak_rss_mb()

    documents = full.new + full.changed + full.unchanged
    figures = {
        "source": str(args.folder),
        "documents": documents,
        "quarantined": full.quarantined,
        "chunks": len(texts),
        "characters_per_chunk": round(sum(map(len, texts)) / max(1, len(texts)), 1),
        "ingest_seconds": round(full_seconds, 2),
        "ingest_cpu_seconds": round(full_cpu, 2),
        "ingest_chunks_per_second": round(len(texts) / full_seconds, 2),
        "encode_ceiling_seconds": round(ceiling_seconds, 2),
        "encode_ceiling_chunks_per_second": round(len(texts) / ceiling_seconds, 2),
        **{
            f"encode_ceiling_{encoder}_chunks_per_second": round(len(texts) / seconds, 2)
            for encoder, seconds in ceilings.items()
        },
        "ratio_to_ceiling": round(ceiling_seconds / full_seconds, 3),
        "unchanged_rerun_seconds": round(rerun_seconds, 3),
        "unchanged_rerun_ratio": round(rerun_seconds / full_seconds, 4),
        "unchanged_rerun_chunks_written": rerun.chunks_written,
        "peak_rss_mb_main_during_ingest": round(ingest_rss, 1),
        "rss_mb_after_each_shard": [round(v) for v in rss_after_shards],
        "peak_rss_mb_main": round(own_rss, 1),
        "peak_rss_mb_largest_child": round(child_rss, 1),
        "embedding_model": embedder.model_id,
        "ingest_embedder": type(embedder).__name__,
        "ingest_encoder_precision": getattr(embedder, "precision", "f32"),
        "embedding_batch_size": pipeline.settings.embedding_batch_size,
        "parse_workers": pipeline.settings.parse_workers,
    }
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

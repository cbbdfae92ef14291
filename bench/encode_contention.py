"""The encoder's throughput alone and beside other work on the same cores.

    .venv/bin/python bench/encode_contention.py [--home LORECHAT_HOME] [--chunks N]

Encodes the same chunks, in calls as large as the embedding step's, with the pipeline's own
encoder in this process: alone; beside a Python thread of the same process that never sleeps
(Dagster, the index writer and the chunk tables are such threads during an ingest); beside one
that works half the time; beside a busy process (a parser worker), at normal and lowest
priority; with one encoder thread instead of one per core; and in a process of its own (the
pipeline's default) beside the same Python threads of this process. Prints chunks/s and the
slowdown against alone.

The chunks come from the index under `--home` (a `lorechat ingest` run's home), else from this
repository's own documentation, parsed and chunked as the pipeline does.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPOSITORY = Path(__file__).resolve().parents[1]
BUSY_PROCESS = "while True: pass"
# What runs beside the encoder while it is measured.
Competitor = Callable[[], contextlib.AbstractContextManager[None]]


def chunks_from_index(home: Path) -> list[str]:
    from lorechat_pipeline.runner import Pipeline
    from lorechat_pipeline.settings import load_settings

    pipeline = Pipeline.from_settings(load_settings(home=home))
    rows = pipeline.open_index().rows(None, ["document", "text"]).to_pylist()
    return [row["text"] for row in sorted(rows, key=lambda row: row["document"])]


def chunks_from_repository() -> list[str]:
    from lorechat_pipeline.core.parsing.partition import ChunkingOptions, parse_and_chunk

    documents = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
    options = ChunkingOptions()
    return [c.text for d in documents for c in parse_and_chunk(d.read_bytes(), d.name, options)]


def local_embedder(threads: int, own_process: bool) -> Any:
    from lorechat_pipeline.defs.resources import embedder_resource
    from lorechat_pipeline.settings import load_settings

    update = {"embedding_threads": threads, "encoder_process": own_process}
    return embedder_resource(load_settings().model_copy(update=update)).get_embedder()


@contextlib.contextmanager
def busy_thread(duty: float) -> Iterator[None]:
    """A thread of this process computing in Python `duty` of the time (sleeping the rest)."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            while time.perf_counter() - started < 0.01:
                pass
            if duty < 1:
                time.sleep(0.01 * (1 - duty) / duty)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def busy_process(niceness: int) -> Iterator[None]:
    command = [sys.executable, "-c", BUSY_PROCESS]
    if niceness:
        command = ["nice", "-n", str(niceness), *command]
    process = subprocess.Popen(command)
    try:
        yield
    finally:
        process.kill()
        process.wait()


def throughput(embedder: Any, texts: list[str], call_size: int) -> float:
    """Chunks a second, encoded in calls of `call_size` chunks."""
    started = time.perf_counter()
    for start in range(0, len(texts), call_size):
        embedder.embed_documents(texts[start : start + call_size])
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="take the chunks of its index")
    parser.add_argument("--chunks", type=int, default=4000, help="at most N chunks")
    args = parser.parse_args()

    texts = chunks_from_index(args.home) if args.home else chunks_from_repository()
    texts = texts[: args.chunks]
    cores = len(os.sched_getaffinity(0))
    conditions: list[tuple[str, int, bool, Competitor]] = [
        ("alone", cores, False, contextlib.nullcontext),
        ("beside a busy Python thread (same process)", cores, False, lambda: busy_thread(1.0)),
        ("beside a Python thread busy half the time", cores, False, lambda: busy_thread(0.5)),
        ("beside a busy process", cores, False, lambda: busy_process(0)),
        ("beside a busy process at nice 19", cores, False, lambda: busy_process(19)),
        ("one encoder thread, alone", 1, False, contextlib.nullcontext),
        ("one encoder thread, beside a busy process", 1, False, lambda: busy_process(0)),
        ("own process, alone", cores, True, contextlib.nullcontext),
        ("own process, beside a busy Python thread here", cores, True, lambda: busy_thread(1.0)),
        ("own process, beside one busy half the time", cores, True, lambda: busy_thread(0.5)),
    ]
    from lorechat_pipeline.core.stages.embedding import CHUNKS_PER_ENCODE

    print(f"{len(texts)} chunks, {cores} cores, calls of {CHUNKS_PER_ENCODE}")
    embedders: dict[tuple[int, bool], Any] = {}
    alone = None
    for label, threads, own_process, condition in conditions:
        if (threads, own_process) not in embedders:
            embedders[threads, own_process] = local_embedder(threads, own_process)
            embedders[threads, own_process].embed_documents(texts[:64])  # compile and warm up
        with condition():
            time.sleep(0.2)  # let the competitor start
            rate = throughput(embedders[threads, own_process], texts, CHUNKS_PER_ENCODE)
        alone = alone or rate
        print(f"{label:45s} {threads} thread(s) {rate:7.1f} chunks/s  {alone / rate:4.2f}x slower")


if __name__ == "__main__":
    main()

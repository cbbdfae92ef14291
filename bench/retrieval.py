"""Retrieval quality on a BEIR-format folder through the serving API's search code path:
`python -m bench.retrieval --beir DIR --qrels PATH --state DIR --out FILE`.

Each corpus document becomes a markdown file (its title as a heading, then its text), our
pipeline ingests the folder, and every judged query runs through `serving.search.search` in
dense, keyword and hybrid modes with the query encoder the server runs, from the copy of the
index the server keeps in memory (as it answers unfiltered searches); `--also-lancedb` scores
LanceDB's own search beside it. Chunk hits map back to document ids by each document's best
chunk. Nothing here knows which dataset it reads.

`--queries N` scores the first N judged queries (by id) only; `--corpus-sample M` then indexes
their judged documents plus M others (quick runs: figures are not comparable to the full ones).
"""

import argparse
import json
import os
import time
from pathlib import Path

from bench.metrics import documents_by_max_score, evaluate, load_qrels, read_jsonl
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings
from serving.query_encoder import build_query_embedder
from serving.resident import ResidentVectors, vectors_of
from serving.search import RESULT_COLUMNS, SearchMode, search
from serving.settings import ServingSettings

CHUNK_DEPTH = 300  # chunks fetched per query: enough distinct documents for recall@100
DOCUMENT_DEPTH = 100


def file_name(document_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in document_id)
    return f"{safe}.md"


def write_corpus(
    beir: Path, target: Path, keep: set[str] | None, sample: int | None
) -> dict[str, str]:
    """The corpus as one markdown file per document; returns file name → document id."""
    target.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    others = 0
    for document in read_jsonl(beir / "corpus.jsonl"):
        document_id = str(document["_id"])
        if keep is not None and document_id not in keep:
            if sample is None or others >= sample:
                continue
            others += 1
        name = file_name(document_id)
        if name in names:
            raise ValueError(f"two documents map to the file name {name!r}")
        names[name] = document_id
        title = str(document.get("title") or "").strip()
        body = str(document.get("text") or "").strip()
        (target / name).write_text(f"# {title}\n\n{body}\n" if title else f"{body}\n")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--beir", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--corpus-sample", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--also-lancedb", action="store_true", help="also score LanceDB's search without the copy"
    )
    args = parser.parse_args()

    qrels = load_qrels(args.qrels)
    texts = {str(q["_id"]): str(q["text"]) for q in read_jsonl(args.beir / "queries.jsonl")}
    judged = sorted(q for q in qrels if q in texts)
    if args.queries is not None:
        judged = judged[: args.queries]
    qrels = {q: qrels[q] for q in judged}
    keep = {d for q in judged for d in qrels[q]} if args.queries is not None else None

    source = args.state / "corpus"
    names = write_corpus(args.beir, source, keep, args.corpus_sample)
    settings = load_settings(home=args.state / "home", source=str(source))
    pipeline = Pipeline.from_settings(settings)
    started = time.perf_counter()
    summary = pipeline.ingest()
    ingest_seconds = time.perf_counter() - started
    index = pipeline.open_current_index()
    # An index ingested by an earlier version (a kept --state) gets today's search indexes: an
    # unchanged corpus ingests nothing, so the pipeline would not maintain it.
    index.maintain(settings.ann_index_min_rows)
    encoder = build_query_embedder(
        ServingSettings(home=args.state / "home", query_encoder_dir=args.state / "query-encoder")
    )

    result: dict = {
        "dataset": str(args.beir),
        "qrels": str(args.qrels),
        "corpus_documents": len(names),
        "index_rows": index.count(),
        "ingest_seconds": round(ingest_seconds, 1),
        "chunks_written": summary.chunks_written,
        "query_encoder": type(encoder).__name__,
    }
    vectors = {q: encoder.embed_query(texts[q]) for q in judged}
    started = time.perf_counter()
    data = index.rows(None, [*RESULT_COLUMNS, "vector"])
    resident = ResidentVectors((index.name, 0), vectors_of(data), data.drop_columns(["vector"]))
    del data
    result["resident_build_seconds"] = round(time.perf_counter() - started, 1)
    copies = (
        {"modes": resident, "modes_lancedb": None} if args.also_lancedb else {"modes": resident}
    )
    for key, copy in copies.items():
        result[key] = {}
        for mode in (SearchMode.DENSE, SearchMode.KEYWORD, SearchMode.HYBRID):
            rankings: dict[str, list[str]] = {}
            t0 = time.perf_counter()
            for query in judged:
                hits = search(
                    index, mode, texts[query], vectors[query], CHUNK_DEPTH, None, resident=copy
                )
                pairs = [(names[Path(h.row["document"]).name], h.score) for h in hits]
                rankings[query] = documents_by_max_score(pairs, DOCUMENT_DEPTH)
            seconds = time.perf_counter() - t0
            result[key][mode.value] = {
                **evaluate(rankings, qrels),
                "ms_per_query": round(seconds * 1000 / max(1, len(judged)), 1),
            }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()

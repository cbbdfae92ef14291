"""Stage 3: embed the chunks of documents whose chunk set is new or changed.

Chunks of many documents are encoded together (the model runs fastest on full batches), then
written back per document, content-addressed, so a crash loses at most one batch of work.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import CHUNKED, LedgerEntry, load_ledger, save_ledger
from lorechat_pipeline.core.records import embedding_schema
from lorechat_pipeline.core.storage import ObjectStore
from lorechat_pipeline.core.tables import read_table, write_table

CHECKPOINT_SECONDS = 30.0


@dataclass
class EmbeddingReport:
    shard: str
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    recovered: int = 0
    removed: int = 0
    encode_seconds: float = 0.0
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)


# Chunks sent to the encoder together: it sorts them by length into batches, so the more it sees
# at once the less padding it runs (512 holds a typical shard whole: 2% faster than 256 on the
# python3.11-doc chunks), and a crash loses at most this many chunks' encoding.
CHUNKS_PER_ENCODE = 512


def embed_shard(
    processed: ObjectStore,
    shard: str,
    *,
    chunk_ledger: dict[str, LedgerEntry],
    layout: ProcessedLayout,
    embedder: Embedder,
    count_tokens: Callable[[list[str]], int] | None = None,
    on_documents: Callable[[int], None] | None = None,
) -> EmbeddingReport:
    report = EmbeddingReport(shard)
    ledger_key = layout.embedding_ledger(shard)
    ledger = load_ledger(processed, ledger_key)
    wanted = {doc_id: e for doc_id, e in chunk_ledger.items() if e.status == CHUNKED}

    for gone in [doc_id for doc_id in ledger if doc_id not in wanted]:
        processed.delete_prefix(layout.embeddings_prefix(shard, gone))
        del ledger[gone]
        report.removed += 1

    todo = sorted(
        (
            e
            for doc_id, e in wanted.items()
            if ledger.get(doc_id, None) is None or ledger[doc_id].content_fp != e.content_fp
        ),
        key=lambda e: e.document,
    )
    pending: list[tuple[LedgerEntry, pa.Table]] = []
    pending_chunks = 0
    last_checkpoint = time.monotonic()

    def flush() -> None:
        nonlocal pending_chunks
        if not pending:
            return
        texts = [t for _, table in pending for t in table.column("text").to_pylist()]
        started = time.perf_counter()
        vectors = embedder.embed_documents(texts)
        report.encode_seconds += time.perf_counter() - started
        tokens = count_tokens(texts) if count_tokens else 0
        offset = 0
        for entry, table in pending:
            count = table.num_rows
            write_table(
                processed,
                layout.embeddings(shard, entry.document_id, entry.content_fp),
                _embedding_table(table, vectors[offset : offset + count], embedder.dimension),
            )
            offset += count
            ledger[entry.document_id] = entry
            processed.delete_prefix(
                layout.embeddings_prefix(shard, entry.document_id),
                keep=layout.embeddings(shard, entry.document_id, entry.content_fp),
            )
        report.documents += len(pending)
        report.chunks += len(texts)
        report.tokens += tokens
        if on_documents:
            on_documents(len(pending))
        pending.clear()
        pending_chunks = 0

    for entry in todo:
        done = layout.embeddings(shard, entry.document_id, entry.content_fp)
        if processed.exists(done):
            ledger[entry.document_id] = entry  # finished by an interrupted run
            report.recovered += 1
            continue
        chunks = read_table(processed, layout.chunks(shard, entry.document_id, entry.content_fp))
        if chunks is None:
            continue  # chunk artifact gone (pruned by a newer run); the next run settles it
        pending.append((entry, chunks.select(["chunk_id", "text"])))
        pending_chunks += chunks.num_rows
        if pending_chunks >= CHUNKS_PER_ENCODE:
            flush()
            if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                save_ledger(processed, ledger_key, ledger.values())
                last_checkpoint = time.monotonic()
    flush()
    save_ledger(processed, ledger_key, ledger.values())
    report.ledger = ledger
    return report


def _embedding_table(chunks: pa.Table, vectors: np.ndarray, dimension: int) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.Table.from_arrays(
        [chunks.column("chunk_id"), pa.FixedSizeListArray.from_arrays(flat, dimension)],
        schema=embedding_schema(dimension),
    )

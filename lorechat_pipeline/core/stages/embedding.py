"""Stage 3: embed the chunks of documents whose chunk set is new or changed.

Chunks of many documents are encoded together (the model runs fastest on full batches), then
written back per document, content-addressed, so a crash loses at most one batch of work. What
an earlier attempt or an embed-ahead (below) left at that place is adopted, not encoded again.
"""

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import CHUNKED, LedgerEntry, load_ledger, save_ledger
from lorechat_pipeline.core.records import embedding_schema
from lorechat_pipeline.core.storage import ObjectStore
from lorechat_pipeline.core.tables import read_table, write_table
from lorechat_pipeline.core.turns import Turns

CHECKPOINT_SECONDS = 30.0

# The encoder of a process keeps every core busy: an embedding step holds its turn for a whole
# shard, and an embed-ahead (which encodes the next shard while a run writes its index, runs its
# checks and starts the next run) uses it only in between.
encoder_turns = Turns()


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
# at once the less padding it runs (2,048 holds a typical shard of a 16-shard corpus whole and
# encodes 4-5% more chunks a second than 512, which were 2% faster than 256), and a crash loses
# at most this many chunks' encoding (7 s of them with OpenVINO on AMX, 25 s without).
CHUNKS_PER_ENCODE = 2048
# An embed-ahead's calls are as large: an embedding step that wants the encoder waits for the
# one under way, but that call encodes the step's own shard, whose vectors it adopts; calls of
# 128 cost ~10% more per chunk than 512 (more padding, smaller batches).
CHUNKS_PER_ENCODE_AHEAD = CHUNKS_PER_ENCODE


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
    # Held for the whole shard: work ahead must not slip in between its encodes.
    with encoder_turns.foreground(shard):
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
            _write_embeddings(
                processed,
                shard,
                [(entry.document_id, entry.content_fp, table) for entry, table in pending],
                vectors,
                layout=layout,
                dimension=embedder.dimension,
            )
            for entry, _ in pending:
                ledger[entry.document_id] = entry
                _forget_older_versions(processed, layout, shard, entry)
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
                ledger[entry.document_id] = entry  # finished by an interrupted run or ahead
                _forget_older_versions(processed, layout, shard, entry)
                report.recovered += 1
                continue
            chunks = read_table(
                processed, layout.chunks(shard, entry.document_id, entry.content_fp)
            )
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


def awaiting_embedding(
    processed: ObjectStore, shard: str, layout: ProcessedLayout
) -> dict[str, str]:
    """Content fingerprints by document id of the shard's chunk sets its ledgers say are not
    embedded yet (after a change of model, every one)."""
    embedded = load_ledger(processed, layout.embedding_ledger(shard))
    return {
        doc_id: entry.content_fp
        for doc_id, entry in load_ledger(processed, layout.chunk_ledger(shard)).items()
        if entry.status == CHUNKED
        and (doc_id not in embedded or embedded[doc_id].content_fp != entry.content_fp)
    }


@dataclass
class EmbedAheadReport:
    shard: str
    documents: int = 0
    chunks: int = 0


def embed_ahead(
    processed: ObjectStore,
    shard: str,
    documents: Iterable[tuple[str, str]],
    *,
    layout: ProcessedLayout,
    embedder: Embedder,
    stop: threading.Event,
    asked_before: int,
    turns: Turns = encoder_turns,
) -> EmbedAheadReport:
    """Embed the chunks of `documents` ((document id, content fingerprint) of chunk tables in
    the shard) before the shard's embedding step, while the encoder has nothing else to do.

    Vectors go where the step looks for an interrupted attempt's, and the step adopts them: it
    still decides and records everything, so an embed-ahead that is stopped or guessed wrong (a
    document changed in between) costs time, never correctness. It encodes only in the
    encoder's background turn and ends, leaving the rest to the step, as soon as the shard's own
    step asks for the encoder (`asked_before`: `turns.asked(shard)` before that step could)."""
    report = EmbedAheadReport(shard)
    pending = collections.deque(
        (doc_id, content_fp)
        for doc_id, content_fp in dict(documents).items()
        if not processed.exists(layout.embeddings(shard, doc_id, content_fp))
    )
    with turns.background(stop, ahead_of=(shard, asked_before)) as acquired:
        while acquired and pending and not stop.is_set() and not turns.should_step_aside():
            group: list[tuple[str, str, pa.Table]] = []
            grouped_chunks = 0
            while pending and grouped_chunks < CHUNKS_PER_ENCODE_AHEAD:
                doc_id, content_fp = pending.popleft()
                chunks = read_table(processed, layout.chunks(shard, doc_id, content_fp))
                if chunks is not None:
                    group.append((doc_id, content_fp, chunks.select(["chunk_id", "text"])))
                    grouped_chunks += chunks.num_rows
            texts = [t for *_, table in group for t in table.column("text").to_pylist()]
            vectors = embedder.embed_documents(texts)
            _write_embeddings(
                processed, shard, group, vectors, layout=layout, dimension=embedder.dimension
            )
            report.documents += len(group)
            report.chunks += len(texts)
    return report


def _write_embeddings(
    processed: ObjectStore,
    shard: str,
    documents: list[tuple[str, str, pa.Table]],
    vectors: np.ndarray,
    *,
    layout: ProcessedLayout,
    dimension: int,
) -> None:
    """Each document's rows of `vectors` (in the order of its chunks, documents in turn)."""
    offset = 0
    for doc_id, content_fp, chunks in documents:
        count = chunks.num_rows
        write_table(
            processed,
            layout.embeddings(shard, doc_id, content_fp),
            _embedding_table(chunks, vectors[offset : offset + count], dimension),
        )
        offset += count


def _forget_older_versions(
    processed: ObjectStore, layout: ProcessedLayout, shard: str, entry: LedgerEntry
) -> None:
    processed.delete_prefix(
        layout.embeddings_prefix(shard, entry.document_id),
        keep=layout.embeddings(shard, entry.document_id, entry.content_fp),
    )


def _embedding_table(chunks: pa.Table, vectors: np.ndarray, dimension: int) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.Table.from_arrays(
        [chunks.column("chunk_id"), pa.FixedSizeListArray.from_arrays(flat, dimension)],
        schema=embedding_schema(dimension),
    )

"""Stage 4: bring the shard's rows in the vector index exactly in step with the embeddings."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import LedgerEntry
from lorechat_pipeline.core.records import index_schema
from lorechat_pipeline.core.storage import ObjectStore
from lorechat_pipeline.core.tables import read_table
from lorechat_pipeline.core.vector_index import DOCUMENTS_PER_COMMIT, sql_string


class ArtifactMissing(RuntimeError):
    pass


@dataclass
class IndexReport:
    shard: str
    documents_replaced: int = 0
    documents_deleted: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    rows_expected: int = 0
    rows_present: int = 0
    # Chunks the backend could not hold (Upstash's per-vector limits), with their reasons.
    quarantined: list[Any] = field(default_factory=list)


def index_rows(
    processed: ObjectStore,
    layout: ProcessedLayout,
    shard: str,
    entry: LedgerEntry,
    embedding_model: str,
) -> pa.Table:
    chunks = read_table(processed, layout.chunks(shard, entry.document_id, entry.content_fp))
    vectors = read_table(processed, layout.embeddings(shard, entry.document_id, entry.content_fp))
    if chunks is None or vectors is None:
        raise ArtifactMissing(
            f"{entry.document}: chunk or embedding artifact {entry.content_fp} is missing; "
            "re-materialize document_chunks and chunk_embeddings for this partition"
        )
    if chunks.column("chunk_id").to_pylist() != vectors.column("chunk_id").to_pylist():
        raise ArtifactMissing(f"{entry.document}: chunk and embedding artifacts disagree")
    return chunks.append_column(
        "embedding_model", pa.array([embedding_model] * chunks.num_rows, pa.string())
    ).append_column("vector", vectors.column("vector"))


def index_shard(
    processed: ObjectStore,
    index: VectorIndex,
    shard: str,
    *,
    embedding_ledger: dict[str, LedgerEntry],
    layout: ProcessedLayout,
    on_documents: Callable[[int], None] | None = None,
) -> IndexReport:
    report = IndexReport(shard)
    current = index.document_versions(shard)
    replace = sorted(
        doc_id for doc_id, e in embedding_ledger.items() if current.get(doc_id) != e.content_fp
    )
    delete = sorted(doc_id for doc_id in current if doc_id not in embedding_ledger)
    schema = index_schema(index.manifest.embedding_dimension)
    model = index.manifest.embedding_model
    # Deletions ride along with the first batch so a small change is a single commit.
    batches = [
        replace[i : i + DOCUMENTS_PER_COMMIT] for i in range(0, len(replace), DOCUMENTS_PER_COMMIT)
    ]
    if delete and not batches:
        batches = [[]]
    # One batch's rows in memory at a time, yet a run that gives up (a failed write, a missing
    # artifact) leaves the shard's index as it was.
    with index.all_or_nothing():
        for number, batch in enumerate(batches):
            tables = [
                index_rows(processed, layout, shard, embedding_ledger[doc_id], model)
                for doc_id in batch
            ]
            rows = pa.concat_tables(tables) if tables else schema.empty_table()
            targets = batch + (delete if number == 0 else [])
            result = index.replace_documents(rows, targets)
            report.rows_written += result.written
            report.rows_deleted += result.deleted
            report.quarantined += getattr(result, "quarantined", ())  # UpstashWriteResult's
            if on_documents:
                on_documents(len(batch))
    report.documents_replaced = len(replace)
    report.documents_deleted = len(delete)
    report.rows_expected = sum(e.chunk_count for e in embedding_ledger.values())
    report.rows_present = index.count(f"shard = {sql_string(shard)}")
    return report

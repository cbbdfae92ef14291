"""Does the index hold exactly the chunks the pipeline's ledgers say it should?"""

from dataclasses import dataclass, field

from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.ledger import CHUNKED, LedgerEntry
from lorechat_pipeline.core.vector_index import sql_string


@dataclass
class ShardVerification:
    expected_rows: int
    actual_rows: int
    stale_or_orphaned: list[str] = field(default_factory=list)  # document ids
    missing: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.expected_rows == self.actual_rows
            and not self.stale_or_orphaned
            and not self.missing
        )


def verify_shard(
    index: VectorIndex | None, shard: str, chunk_ledger: dict[str, LedgerEntry]
) -> ShardVerification:
    expected = {doc_id: e for doc_id, e in chunk_ledger.items() if e.status == CHUNKED}
    expected_rows = sum(e.chunk_count for e in expected.values())
    if index is None:
        return ShardVerification(expected_rows, 0, missing=sorted(expected))
    actual = index.document_versions(shard)
    return ShardVerification(
        expected_rows=expected_rows,
        actual_rows=index.count(f"shard = {sql_string(shard)}"),
        stale_or_orphaned=sorted(
            doc_id
            for doc_id, content_fp in actual.items()
            if doc_id not in expected or expected[doc_id].content_fp != content_fp
        ),
        missing=sorted(doc_id for doc_id in expected if doc_id not in actual),
    )

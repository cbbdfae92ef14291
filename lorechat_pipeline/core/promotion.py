"""Is a new index version ready to replace the current one? Completeness, then quality."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.evaluation import SearchDocuments
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import load_ledger
from lorechat_pipeline.core.planning import unsettled_reason
from lorechat_pipeline.core.stages.observation import load_catalog
from lorechat_pipeline.core.storage import ObjectStore
from lorechat_pipeline.core.verification import verify_shard


@dataclass
class CandidateParity:
    expected_rows: int = 0
    actual_rows: int = 0
    # shard → why it is not complete (stages behind the catalog, rows not matching the chunks)
    shards_behind: dict[str, str] = field(default_factory=dict)
    # What the version holds (document → content fingerprint, every shard): equal digests mean
    # the same rows, on any backend.
    content_digest: str = ""

    @property
    def passed(self) -> bool:
        return not self.shards_behind and self.expected_rows == self.actual_rows

    def describe(self) -> str:
        if self.passed:
            return f"{self.actual_rows} rows, exactly the chunks of every catalogued document"
        behind = "; ".join(f"{shard}: {why}" for shard, why in sorted(self.shards_behind.items()))
        return f"{self.actual_rows} rows for {self.expected_rows} expected chunks" + (
            f"; shards not complete: {behind}" if behind else ""
        )


def check_candidate_parity(
    candidate: VectorIndex, processed: ObjectStore, shards: Sequence[str]
) -> CandidateParity:
    """Every shard's stages have caught up with its catalog and the rows equal the chunk set."""
    layout = ProcessedLayout.for_manifest(candidate.manifest)
    parity = CandidateParity()
    digest = hashlib.sha256()
    for shard in shards:
        chunk_ledger = load_ledger(processed, layout.chunk_ledger(shard))
        verification = verify_shard(candidate, shard, chunk_ledger)
        parity.expected_rows += verification.expected_rows
        parity.actual_rows += verification.actual_rows
        versions = candidate.document_versions(shard)
        for doc_id, content_fp in sorted(versions.items()):
            digest.update(f"{shard}\0{doc_id}\0{content_fp}\n".encode())
        reason = unsettled_reason(
            load_catalog(processed, shard),
            chunk_ledger,
            load_ledger(processed, layout.embedding_ledger(shard)),
            versions,
        )
        if reason:
            parity.shards_behind[shard] = reason
        elif not verification.passed:
            parity.shards_behind[shard] = (
                f"{verification.actual_rows} rows for {verification.expected_rows} chunks"
            )
    parity.content_digest = digest.hexdigest()
    return parity


def document_search(index: VectorIndex, embedder: Embedder) -> SearchDocuments:
    def search(query: str, k: int) -> list[str]:
        return [hit.document for hit in index.search(embedder.embed_query(query), k)]

    return search


def sample_chunks(index: VectorIndex, limit: int = 5000) -> list[tuple[str, str, str]]:
    """(chunk_id, document, text) rows to derive golden queries from; bounded for big indexes."""
    table = index.rows(None, ["chunk_id", "document", "text"], limit=limit)
    return list(
        zip(
            table.column("chunk_id").to_pylist(),
            table.column("document").to_pylist(),
            table.column("text").to_pylist(),
            strict=True,
        )
    )

"""Where each stage keeps its artifacts in the processed store.

Artifacts are content-addressed (by document id and content fingerprint under the fingerprint of
the configuration that made them), so a re-run or crash recovery finds finished work and never
mixes outputs of two configurations.
"""

from dataclasses import dataclass

from lorechat_pipeline.core.ids import fingerprint
from lorechat_pipeline.core.manifest import IndexManifest


@dataclass(frozen=True)
class ProcessedLayout:
    chunker_version: str
    # None for the chunk stage, which must not need the embedding model (loading it is slow).
    embedder_version: str | None = None

    @property
    def _embedder(self) -> str:
        if self.embedder_version is None:
            raise ValueError("this layout has no embedder: embedding paths need one")
        return self.embedder_version

    @classmethod
    def for_manifest(cls, manifest: IndexManifest) -> "ProcessedLayout":
        """The artifacts an index version was built from (its embedder's fingerprint as in
        Embedder.fingerprint), found without loading the model."""
        return cls(
            chunker_version=manifest.chunker_version,
            embedder_version=embedder_fingerprint(*manifest.embedder_fields),
        )

    @staticmethod
    def catalog(shard: str) -> str:
        return f"catalog/{shard}.parquet"

    def chunk_ledger(self, shard: str) -> str:
        return f"ledgers/chunks/{self.chunker_version}/{shard}.parquet"

    def embedding_ledger(self, shard: str) -> str:
        return f"ledgers/embeddings/{self._embedder}/{self.chunker_version}/{shard}.parquet"

    def chunks_prefix(self, shard: str, document_id: str) -> str:
        return f"chunks/{self.chunker_version}/{shard}/{document_id}/"

    def chunks(self, shard: str, document_id: str, content_fp: str) -> str:
        return f"{self.chunks_prefix(shard, document_id)}{content_fp}.parquet"

    def rejection(self, shard: str, document_id: str, content_fp: str) -> str:
        """Why this content yielded no chunks, found by a parse ahead of the document's run."""
        return f"{self.chunks_prefix(shard, document_id)}{content_fp}.rejected.json"

    def embeddings_prefix(self, shard: str, document_id: str) -> str:
        return f"embeddings/{self._embedder}/{self.chunker_version}/{shard}/{document_id}/"

    def embeddings(self, shard: str, document_id: str, content_fp: str) -> str:
        return f"{self.embeddings_prefix(shard, document_id)}{content_fp}.parquet"


def embedder_fingerprint(model_id: str, dimension: int, metric: str, normalized: bool) -> str:
    return fingerprint(model_id, str(dimension), str(normalized), metric)

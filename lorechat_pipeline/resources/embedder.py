"""Embedding providers. Bedrock joins sentence-transformers in the production backends work."""

from abc import ABC, abstractmethod

import dagster as dg

from lorechat_pipeline.core.embedding import (
    Embedder,
    SentenceTransformerEmbedder,
    embedder_model_id,
)
from lorechat_pipeline.core.manifest import IndexManifest


class EmbedderResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def get_embedder(self) -> Embedder: ...

    def embedder_for(self, manifest: IndexManifest) -> Embedder:
        """The embedder that made an index's vectors: this one, or the model it names."""
        configured = self.get_embedder()
        if manifest.embedding_model == configured.model_id:
            return configured
        return SentenceTransformerEmbedder.for_model_id(manifest.embedding_model)

    @abstractmethod
    def model_id(self) -> str:
        """The model id an index built by this embedder records, known without loading it."""

    def model_version(self) -> str:
        """What identifies the vectors this embedder makes (a code version for the UI)."""
        return f"{self.model_id()};normalized;cosine"


class SentenceTransformerEmbedderResource(EmbedderResource):
    """sentence-transformers on CPU; by default the all-MiniLM-L6-v2 packaged on PyPI."""

    model_path: str | None = None
    batch_size: int = 16
    # Tokens per chunk the model reads (None: the model's own limit, 256 for MiniLM).
    max_tokens: int | None = None

    def get_embedder(self) -> Embedder:
        return SentenceTransformerEmbedder(
            self.model_path, batch_size=self.batch_size, max_tokens=self.max_tokens
        )

    def model_id(self) -> str:
        return embedder_model_id(self.model_path, self.max_tokens)

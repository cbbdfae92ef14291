"""Embedding providers. Bedrock joins sentence-transformers in the production backends work."""

from abc import ABC, abstractmethod

import dagster as dg

from lorechat_pipeline.core.embedding import Embedder, SentenceTransformerEmbedder


class EmbedderResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def get_embedder(self) -> Embedder: ...


class SentenceTransformerEmbedderResource(EmbedderResource):
    """sentence-transformers on CPU; by default the all-MiniLM-L6-v2 packaged on PyPI."""

    model_path: str | None = None
    batch_size: int = 16

    def get_embedder(self) -> Embedder:
        return SentenceTransformerEmbedder(self.model_path, batch_size=self.batch_size)

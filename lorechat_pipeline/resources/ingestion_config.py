"""How documents are parsed, chunked and limited: one resource shared by every stage."""

import dagster as dg

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.parsing import ChunkingOptions, ParserPool


class IngestionConfig(dg.ConfigurableResource):
    chunk_max_characters: int = 800
    chunk_new_after_characters: int = 600
    chunk_overlap: int = 0
    chunk_combine_under_characters: int = 200
    max_document_bytes: int = 50 * 1024 * 1024
    parse_timeout_seconds: float = 120.0
    parse_workers: int = 2
    parse_memory_limit_mb: int | None = None
    ann_index_min_rows: int = 100_000

    def chunking_options(self) -> ChunkingOptions:
        return ChunkingOptions(
            max_characters=self.chunk_max_characters,
            new_after_n_chars=self.chunk_new_after_characters,
            overlap=self.chunk_overlap,
            combine_text_under_n_chars=self.chunk_combine_under_characters,
        )

    def open_parser(self) -> ParserPool:
        return ParserPool(
            self.chunking_options(),
            workers=self.parse_workers,
            timeout_seconds=self.parse_timeout_seconds,
            memory_limit_mb=self.parse_memory_limit_mb,
        )

    def manifest(self, embedder: Embedder) -> IndexManifest:
        options = self.chunking_options()
        return IndexManifest(
            embedding_model=embedder.model_id,
            embedding_dimension=embedder.dimension,
            metric=embedder.metric,
            normalized=embedder.normalized,
            chunker_version=options.fingerprint(),
            chunker_description=options.describe(),
        )

    def layout(self, embedder: Embedder) -> ProcessedLayout:
        return ProcessedLayout(
            chunker_version=self.chunking_options().fingerprint(),
            embedder_version=embedder.fingerprint,
        )

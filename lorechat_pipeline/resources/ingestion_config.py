"""How documents are parsed, chunked and limited: one resource shared by every stage."""

import atexit
import contextlib
import threading
from collections.abc import Iterator

import dagster as dg

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.parsing import ChunkingOptions, ParseLimits, ParserPool

_shared_pools: dict[tuple[object, ...], ParserPool] = {}
_shared_pools_lock = threading.Lock()


def _close_shared_pools() -> None:
    for pool in _shared_pools.values():
        pool.close()
    _shared_pools.clear()


atexit.register(_close_shared_pools)


class IngestionConfig(dg.ConfigurableResource):
    chunk_max_characters: int = 800
    chunk_new_after_characters: int = 600
    chunk_overlap: int = 0
    chunk_combine_under_characters: int = 200
    max_document_bytes: int = 50 * 1024 * 1024
    parse_timeout_seconds: float = 300.0
    parse_workers: int = 2
    parse_memory_limit_mb: int | None = 2048
    max_inflated_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: float = 200.0
    max_document_characters: int = 10_000_000
    max_document_chunks: int = 20_000
    ann_index_min_rows: int = 100_000
    deletion_guard_share: float = 0.2
    deletion_guard_min_documents: int = 10
    # CloudWatch EMF lines on stdout for each chunking step (see core/metrics.py).
    emit_cloudwatch_metrics: bool = False

    def chunking_options(self) -> ChunkingOptions:
        return ChunkingOptions(
            max_characters=self.chunk_max_characters,
            new_after_n_chars=self.chunk_new_after_characters,
            overlap=self.chunk_overlap,
            combine_text_under_n_chars=self.chunk_combine_under_characters,
        )

    def parse_limits(self) -> ParseLimits:
        return ParseLimits(
            max_inflated_bytes=self.max_inflated_bytes,
            max_compression_ratio=self.max_compression_ratio,
            max_characters=self.max_document_characters,
            max_chunks=self.max_document_chunks,
        )

    @contextlib.contextmanager
    def open_parser(self, documents: int | None = None) -> Iterator[ParserPool]:
        """The process's parser pool for this configuration, started on first use, for a run's
        chunk step: it goes before a parse-ahead (see core/stages/parse_ahead.py).

        Warming a worker (unstructured and spaCy imports) takes seconds, so when one process runs
        many partitions (the CLI, in-process runs) they share warm workers; the pool is shut down
        when the process exits.
        """
        pool = self._shared_pool(documents)
        with pool.turns.foreground():
            yield pool

    @contextlib.contextmanager
    def open_parser_in_background(
        self, documents: int, stop: threading.Event
    ) -> Iterator[ParserPool | None]:
        """The same pool for a parse-ahead, once no chunk step needs it (None if `stop` is set
        first). The holder must step aside between documents when `pool.turns` says so."""
        pool = self._shared_pool(documents)
        with pool.turns.background(stop) as acquired:
            yield pool if acquired else None

    def _shared_pool(self, documents: int | None) -> ParserPool:
        # No more workers than documents: warming a worker costs seconds of CPU, which a sensor
        # run of one new document would otherwise spend twice. The pool grows when needed.
        wanted = min(self.parse_workers, documents) if documents else self.parse_workers
        key = (
            self.chunking_options(),
            self.parse_workers,
            self.parse_timeout_seconds,
            self.parse_memory_limit_mb,
            self.parse_limits(),
        )
        with _shared_pools_lock:
            pool = _shared_pools.get(key)
            if pool is None:
                pool = ParserPool(
                    self.chunking_options(),
                    workers=wanted,
                    timeout_seconds=self.parse_timeout_seconds,
                    memory_limit_mb=self.parse_memory_limit_mb,
                    limits=self.parse_limits(),
                ).__enter__()
                _shared_pools[key] = pool
            pool.workers = max(pool.workers, wanted)
        return pool

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

    def chunk_layout(self) -> ProcessedLayout:
        """Where chunks and their ledger live: known without loading the embedding model."""
        return ProcessedLayout(chunker_version=self.chunking_options().fingerprint())

    def layout(self, embedder: Embedder) -> ProcessedLayout:
        return ProcessedLayout(
            chunker_version=self.chunking_options().fingerprint(),
            embedder_version=embedder.fingerprint,
        )

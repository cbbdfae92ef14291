"""Vectorization: chunk embeddings, and the vector index partitions built from them."""

import time

import dagster as dg

from lorechat_pipeline.core.ledger import load_ledger
from lorechat_pipeline.core.stages.embedding import embed_shard
from lorechat_pipeline.core.stages.indexing import index_shard
from lorechat_pipeline.defs.ingestion.assets import TRANSIENT_RETRY, document_chunks
from lorechat_pipeline.defs.partitions import document_shards_partitions_def
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import ObjectStoreResource
from lorechat_pipeline.resources.vector_store import VectorStoreResource


@dg.asset(
    partitions_def=document_shards_partitions_def,
    deps=[document_chunks],
    group_name="vectorization",
    kinds={"pytorch", "parquet"},
    # Backfills and sensor runs together never call the embedding provider more than allowed.
    pool="embedding_provider",
    retry_policy=TRANSIENT_RETRY,
    description=(
        "Normalised embeddings of the chunks of every new or changed document, batched across "
        "documents and stored per document beside its chunks."
    ),
)
def chunk_embeddings(
    context: dg.AssetExecutionContext,
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    processed = processed_store.open()
    model = embedder.get_embedder()
    layout = ingestion_config.layout(model)
    shard = context.partition_key
    count_tokens = getattr(model, "count_tokens", None)
    report = embed_shard(
        processed,
        shard,
        chunk_ledger=load_ledger(processed, layout.chunk_ledger(shard)),
        layout=layout,
        embedder=model,
        count_tokens=count_tokens,
    )
    return dg.MaterializeResult(
        metadata={
            "documents_embedded": report.documents,
            "documents_recovered": report.recovered,
            "documents_removed": report.removed,
            "chunks": report.chunks,
            "tokens": report.tokens,
            "embedding_model": model.model_id,
            "encode_seconds": round(report.encode_seconds, 3),
            "chunks_per_second": round(report.chunks / report.encode_seconds, 1)
            if report.encode_seconds
            else 0.0,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


@dg.asset(
    partitions_def=document_shards_partitions_def,
    deps=[chunk_embeddings],
    group_name="vectorization",
    kinds={"lancedb"},
    # One writer at a time per table keeps commits from conflicting under concurrent backfills.
    pool="vector_index_writes",
    retry_policy=TRANSIENT_RETRY,
    description=(
        "The vector index rows of one shard, kept exactly in step with the source: each changed "
        "document's chunk set is replaced atomically, deleted documents leave the index."
    ),
)
def vector_index(
    context: dg.AssetExecutionContext,
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    processed = processed_store.open()
    model = embedder.get_embedder()
    layout = ingestion_config.layout(model)
    index = vector_store.open_for_write(ingestion_config.manifest(model))
    shard = context.partition_key
    report = index_shard(
        processed,
        index,
        shard,
        embedding_ledger=load_ledger(processed, layout.embedding_ledger(shard)),
        layout=layout,
    )
    aliases = vector_store.aliases()
    if aliases.read() is None:
        # The first version of an index has nothing to protect: it is current as soon as it exists.
        aliases.promote(index.name, reason="the first version of the index")
    maintenance = (
        index.maintain(ingestion_config.ann_index_min_rows)
        if report.documents_replaced or report.documents_deleted
        else []
    )
    return dg.MaterializeResult(
        metadata={
            "index_table": index.name,
            "documents_replaced": report.documents_replaced,
            "documents_deleted": report.documents_deleted,
            "chunks_written": report.rows_written,
            "chunks_deleted": report.rows_deleted,
            "chunks_in_shard": report.rows_present,
            "chunks_in_index": index.count(),
            "index_maintenance": ", ".join(maintenance) or "none",
            "seconds": round(time.perf_counter() - started, 3),
        }
    )

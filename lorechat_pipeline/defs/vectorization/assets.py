"""Vectorization: chunk embeddings, and the vector index partitions built from them."""

import time

import dagster as dg

from lorechat_pipeline.core.ledger import load_ledger
from lorechat_pipeline.core.stages.embedding import embed_shard
from lorechat_pipeline.core.stages.indexing import index_shard
from lorechat_pipeline.defs.ingestion.assets import (
    SHARDS_IN_ONE_RUN,
    TRANSIENT_RETRY,
    document_chunks,
)
from lorechat_pipeline.defs.partitions import document_shards_partitions_def
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import ObjectStoreResource
from lorechat_pipeline.resources.vector_store import VectorStoreResource


@dg.asset(
    partitions_def=document_shards_partitions_def,
    backfill_policy=SHARDS_IN_ONE_RUN,
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
    # Embedders that count the tokens they read while encoding (Bedrock bills them, the local
    # encoders tokenize anyway) are not asked to tokenize every text a second time.
    read_before: int | None = getattr(model, "input_tokens", None)
    count_tokens = getattr(model, "count_tokens", None) if read_before is None else None
    reports = [
        embed_shard(
            processed,
            shard,
            chunk_ledger=load_ledger(processed, layout.chunk_ledger(shard)),
            layout=layout,
            embedder=model,
            count_tokens=count_tokens,
        )
        for shard in context.partition_keys
    ]
    chunks = sum(r.chunks for r in reports)
    encode_seconds = sum(r.encode_seconds for r in reports)
    return dg.MaterializeResult(
        metadata={
            "shards": ", ".join(context.partition_keys),
            "documents_embedded": sum(r.documents for r in reports),
            "documents_recovered": sum(r.recovered for r in reports),
            "documents_removed": sum(r.removed for r in reports),
            "chunks": chunks,
            "tokens": sum(r.tokens for r in reports)
            if read_before is None
            else getattr(model, "input_tokens", 0) - read_before,
            "embedding_model": model.model_id,
            "encode_seconds": round(encode_seconds, 3),
            "chunks_per_second": round(chunks / encode_seconds, 1) if encode_seconds else 0.0,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


class IndexWriteConfig(dg.Config):
    """Run config of `vector_index`."""

    # False when more runs follow at once (`lorechat ingest` runs one shard after another): the
    # rows written stay searchable, scanned beside the indexes, until the last run folds them
    # in. Folding after every shard cost more than the writes on a first load.
    fold_into_indexes: bool = True


@dg.asset(
    partitions_def=document_shards_partitions_def,
    backfill_policy=SHARDS_IN_ONE_RUN,
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
    config: IndexWriteConfig,
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
    reports = [
        index_shard(
            processed,
            index,
            shard,
            embedding_ledger=load_ledger(processed, layout.embedding_ledger(shard)),
            layout=layout,
        )
        for shard in context.partition_keys
    ]
    aliases = vector_store.aliases()
    if aliases.read() is None:
        # The first version of an index has nothing to protect: it is current as soon as it exists.
        aliases.promote(index.name, reason="the first version of the index")
    quarantined = [chunk for r in reports for chunk in r.quarantined]
    for chunk in quarantined:
        context.log.warning(f"chunk {chunk.chunk_id} not indexed: {chunk.reason}")
    replaced = sum(r.documents_replaced for r in reports)
    deleted = sum(r.documents_deleted for r in reports)
    maintenance = (
        index.maintain(ingestion_config.ann_index_min_rows, fold=config.fold_into_indexes)
        if replaced or deleted or (config.fold_into_indexes and index.has_unfolded_rows())
        else []
    )
    return dg.MaterializeResult(
        metadata={
            "shards": ", ".join(context.partition_keys),
            "index_table": index.name,
            "documents_replaced": replaced,
            "documents_deleted": deleted,
            "chunks_written": sum(r.rows_written for r in reports),
            "chunks_deleted": sum(r.rows_deleted for r in reports),
            "chunks_in_shards": sum(r.rows_present for r in reports),
            "chunks_in_index": index.count(),
            # Chunks the index cannot hold (Upstash: metadata > 48 KiB or text > 1 MiB).
            "chunks_quarantined": len(quarantined),
            "quarantined_chunks": dg.MetadataValue.json(
                [
                    {"chunk_id": c.chunk_id, "document_id": c.document_id, "reason": c.reason}
                    for c in quarantined[:50]
                ]
            ),
            "index_maintenance": ", ".join(maintenance) or "none",
            "folded_into_indexes": config.fold_into_indexes,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )

"""Checks that the index holds exactly what the pipeline says it should."""

import warnings

import dagster as dg

from lorechat_pipeline.core.ledger import load_ledger
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.vector_index import IndexNotFound
from lorechat_pipeline.core.verification import verify_shard
from lorechat_pipeline.defs.partitions import document_shards_partitions_def
from lorechat_pipeline.defs.vectorization.assets import vector_index
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import ObjectStoreResource
from lorechat_pipeline.resources.vector_store import VectorStoreResource

# Partitioned asset checks are a Dagster preview; checking per shard is exactly what we need.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")


@dg.asset_check(
    asset=vector_index,
    partitions_def=document_shards_partitions_def,
    description="The shard's index rows are exactly the chunks of its chunked documents.",
)
def vector_index_row_count(
    context: dg.AssetCheckExecutionContext,
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> dg.AssetCheckResult:
    model = embedder.get_embedder()
    layout = ingestion_config.layout(model)
    processed = processed_store.open()
    try:
        index = vector_store.open_for_read(ingestion_config.manifest(model))
    except IndexNotFound:
        index = None
    verifications = {
        shard: verify_shard(index, shard, load_ledger(processed, layout.chunk_ledger(shard)))
        for shard in context.partition_keys
    }
    failing = sorted(shard for shard, v in verifications.items() if not v.passed)
    return dg.AssetCheckResult(
        passed=not failing,
        metadata={
            "shards": ", ".join(verifications),
            "shards_failing": ", ".join(failing) or "none",
            "expected_rows": sum(v.expected_rows for v in verifications.values()),
            "actual_rows": sum(v.actual_rows for v in verifications.values()),
            "documents_stale_or_orphaned": sum(
                len(v.stale_or_orphaned) for v in verifications.values()
            ),
            "documents_missing": sum(len(v.missing) for v in verifications.values()),
        },
    )


@dg.asset_check(
    asset=vector_index,
    partitions_def=document_shards_partitions_def,
    description="The index manifest (model, dimension, metric, chunker) matches the configuration.",
)
def vector_index_manifest(
    context: dg.AssetCheckExecutionContext,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> dg.AssetCheckResult:
    configured: IndexManifest = ingestion_config.manifest(embedder.get_embedder())
    try:
        table, stored = vector_store.stored_manifest(configured)
    except IndexNotFound as error:
        return dg.AssetCheckResult(passed=False, metadata={"problem": str(error)})
    problems = configured.differences(stored)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "index_table": table,
            "problems": "; ".join(problems) or "none",
            "embedding_model": stored.embedding_model,
            "embedding_dimension": stored.embedding_dimension,
            "chunker_version": stored.chunker_version,
        },
    )

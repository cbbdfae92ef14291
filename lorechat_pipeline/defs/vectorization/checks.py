"""Checks that the index holds exactly what the pipeline says it should."""

import warnings

import dagster as dg

from lorechat_pipeline.core.ledger import CHUNKED, load_ledger
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.vector_index import IndexNotFound, sql_string
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
    description="The shard's index rows are exactly the chunks of its successfully chunked documents.",
)
def vector_index_row_count(
    context: dg.AssetCheckExecutionContext,
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> dg.AssetCheckResult:
    shard = context.partition_key
    model = embedder.get_embedder()
    layout = ingestion_config.layout(model)
    chunk_ledger = load_ledger(processed_store.open(), layout.chunk_ledger(shard))
    expected = {doc_id: e for doc_id, e in chunk_ledger.items() if e.status == CHUNKED}
    expected_rows = sum(e.chunk_count for e in expected.values())
    try:
        index = vector_store.open_for_read(ingestion_config.manifest(model))
    except IndexNotFound:
        return dg.AssetCheckResult(
            passed=expected_rows == 0, metadata={"expected": expected_rows, "actual": 0}
        )
    actual = index.document_versions(shard)
    actual_rows = index.count(f"shard = {sql_string(shard)}")
    stale = sorted(d for d in actual if expected.get(d) is None or expected[d].content_fp != actual[d])
    missing = sorted(d for d in expected if d not in actual)
    return dg.AssetCheckResult(
        passed=actual_rows == expected_rows and not stale and not missing,
        metadata={
            "expected_rows": expected_rows,
            "actual_rows": actual_rows,
            "documents_stale_or_orphaned": len(stale),
            "documents_missing": len(missing),
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

"""Ingestion: the raw documents of each shard, and their cleaned chunks."""

import time

import dagster as dg

from lorechat_pipeline.core.ids import SHARD_COUNT
from lorechat_pipeline.core.stages.chunking import chunk_shard
from lorechat_pipeline.core.stages.observation import (
    DeletionGuard,
    DeletionRefused,
    load_catalog,
    observe_shard,
)
from lorechat_pipeline.defs.metadata import markdown_table, quarantine_table
from lorechat_pipeline.defs.partitions import document_shards_partitions_def
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import ObjectStoreResource


class ObservationConfig(dg.Config):
    """Run config of `raw_documents`."""

    confirm_deletions: bool = False  # past the deletion guard: the documents really are gone
    # Event mode: only these source keys changed (looked up one by one; no listing).
    keys: list[str] | None = None


# Transient failures (S3 throttling, a connection reset) get retried; a refused run does not.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.asset(
    partitions_def=document_shards_partitions_def,
    group_name="ingestion",
    kinds={"s3", "parquet"},
    retry_policy=TRANSIENT_RETRY,
    description=(
        "The documents in the source (a folder or S3 prefix), one hash shard per partition: key, "
        "ETag/version, size, content hash and `.metadata.json` sidecar. Observed by listing; "
        "only objects whose ETag or size changed are read and hashed."
    ),
)
def raw_documents(
    context: dg.AssetExecutionContext,
    config: ObservationConfig,
    source: ObjectStoreResource,
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    try:
        observation = observe_shard(
            source.open(),
            processed_store.open(),
            context.partition_key,
            shard_count=SHARD_COUNT,
            max_document_bytes=ingestion_config.max_document_bytes,
            keys=config.keys,
            guard=DeletionGuard(
                max_share=ingestion_config.deletion_guard_share,
                min_documents=ingestion_config.deletion_guard_min_documents,
                confirmed=config.confirm_deletions,
            ),
        )
    except DeletionRefused as refused:
        raise dg.Failure(description=str(refused), allow_retries=False) from refused
    diff = observation.diff
    changes = [(k, "new") for k in diff.new] + [(k, "changed") for k in diff.changed]
    changes += [(k, "deleted") for k in diff.deleted]
    return dg.MaterializeResult(
        metadata={
            "source": source.uri,
            "mode": "events" if config.keys is not None else "listing",
            "documents": len(observation.entries),
            "documents_new": len(diff.new),
            "documents_changed": len(diff.changed),
            "documents_unchanged": len(diff.unchanged),
            "documents_deleted": len(diff.deleted),
            "bytes_hashed": observation.bytes_hashed,
            "seconds": round(time.perf_counter() - started, 3),
            "changes": markdown_table(["document", "change"], changes),
        }
    )


@dg.asset(
    partitions_def=document_shards_partitions_def,
    deps=[raw_documents],
    group_name="ingestion",
    kinds={"unstructured", "parquet"},
    retry_policy=TRANSIENT_RETRY,
    description=(
        "Cleaned chunks of every new or changed document, parsed with unstructured and chunked "
        "by title, with lineage. Documents that cannot be parsed are quarantined with a reason "
        "and retried when they change."
    ),
)
def document_chunks(
    context: dg.AssetExecutionContext,
    source: ObjectStoreResource,
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    processed = processed_store.open()
    shard = context.partition_key
    report = chunk_shard(
        source.open(),
        processed,
        shard,
        catalog=load_catalog(processed, shard),
        layout=ingestion_config.chunk_layout(),
        max_document_bytes=ingestion_config.max_document_bytes,
        open_parser=ingestion_config.open_parser,
        # The model loads in a thread while parser workers start: both take seconds, and a
        # sensor run of one new document would otherwise wait for them one after the other.
        on_parsing=lambda: embedder.get_embedder().warm_up_in_background(),
    )
    for entry in report.quarantined:
        context.log.warning(f"quarantined {entry.document}: {entry.reason}: {entry.detail}")
    all_quarantined = [e for e in report.ledger.values() if e.status == "quarantined"]
    return dg.MaterializeResult(
        metadata={
            "documents_chunked": len(report.chunked),
            "documents_quarantined": len(report.quarantined),
            "documents_recovered": report.recovered,
            "documents_removed": report.removed,
            "documents_skipped_changed_during_run": len(report.skipped_changed),
            "chunks": report.chunks,
            "characters": report.characters,
            "chunker": ingestion_config.chunking_options().describe(),
            "seconds": round(time.perf_counter() - started, 3),
            "quarantine": quarantine_table(all_quarantined),
            "quarantined_total": len(all_quarantined),
            "preview": markdown_table(
                ["document", "chunks", "first chunk"],
                [(p["document"], p["chunks"], p["first"]) for p in report.preview],
            ),
        }
    )

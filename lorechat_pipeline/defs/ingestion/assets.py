"""Ingestion: the raw documents of each shard, and their cleaned chunks."""

import time
import warnings

import dagster as dg

from lorechat_pipeline.core.ids import SHARD_COUNT
from lorechat_pipeline.core.metrics import (
    DOCUMENTS_PROCESSED,
    DOCUMENTS_QUARANTINED,
    emit_metrics,
)
from lorechat_pipeline.core.stages.chunking import chunk_shard
from lorechat_pipeline.core.stages.observation import (
    DeletionGuard,
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


# A run covers the shards a sensor tick found changed (or a whole backfill): the parser workers
# and the model warm up once per run, which is what a sensor run mostly spends its time on.
SHARDS_IN_ONE_RUN = dg.BackfillPolicy.single_run()
# Backfill policies are a Dagster beta; a run over several partitions is exactly what we need.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`")

# Transient failures (S3 throttling, a connection reset) get retried.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


DELETION_GUARD_CHECK = "deletion_guard"


@dg.asset(
    partitions_def=document_shards_partitions_def,
    backfill_policy=SHARDS_IN_ONE_RUN,
    group_name="ingestion",
    kinds={"s3", "parquet"},
    retry_policy=TRANSIENT_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            DELETION_GUARD_CHECK,
            asset="raw_documents",
            description=(
                "No deletions beyond LORECHAT_DELETION_GUARD_SHARE of a collection without "
                "confirmation: refused deletions keep their documents in the index."
            ),
        )
    ],
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
    store = source.open()
    shards = context.partition_keys
    # One listing for every shard of the run (event mode looks up its keys instead).
    listing = list(store.list_objects()) if config.keys is None else None
    guard = DeletionGuard(
        max_share=ingestion_config.deletion_guard_share,
        min_documents=ingestion_config.deletion_guard_min_documents,
        confirmed=config.confirm_deletions,
    )
    processed = processed_store.open()
    observations = [
        observe_shard(
            store,
            processed,
            shard,
            shard_count=SHARD_COUNT,
            max_document_bytes=ingestion_config.max_document_bytes,
            listing=listing,
            keys=config.keys,
            guard=guard,
        )
        for shard in shards
    ]
    refusals = {o.shard: o.refused_deletions for o in observations if o.refused_deletions}
    for shard, refusal in refusals.items():
        context.log.error(f"{shard}: {refusal}")
    changes = [
        (key, change)
        for observation in observations
        for change, keys in (
            ("new", observation.diff.new),
            ("changed", observation.diff.changed),
            ("deleted", observation.diff.deleted),
        )
        for key in keys
    ]
    return dg.MaterializeResult(
        metadata={
            "source": source.uri,
            "mode": "events" if config.keys is not None else "listing",
            "shards": ", ".join(shards),
            "documents": sum(len(o.entries) for o in observations),
            "documents_new": sum(len(o.diff.new) for o in observations),
            "documents_changed": sum(len(o.diff.changed) for o in observations),
            "documents_unchanged": sum(len(o.diff.unchanged) for o in observations),
            "documents_deleted": sum(len(o.diff.deleted) for o in observations),
            "bytes_hashed": sum(o.bytes_hashed for o in observations),
            "seconds": round(time.perf_counter() - started, 3),
            "changes": markdown_table(["document", "change"], sorted(changes)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=DELETION_GUARD_CHECK,
                passed=not refusals,
                severity=dg.AssetCheckSeverity.ERROR,
                description=next(iter(refusals.values()), None),
                metadata={"refused_shards": ", ".join(sorted(refusals)) or "none"},
            )
        ],
    )


@dg.asset(
    partitions_def=document_shards_partitions_def,
    backfill_policy=SHARDS_IN_ONE_RUN,
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
    reports = []
    for shard in context.partition_keys:
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
        reports.append(report)
    if ingestion_config.emit_cloudwatch_metrics:
        emit_metrics(
            {
                DOCUMENTS_PROCESSED: sum(len(r.chunked) for r in reports),
                DOCUMENTS_QUARANTINED: sum(len(r.quarantined) for r in reports),
            }
        )
    all_quarantined = [
        e for report in reports for e in report.ledger.values() if e.status == "quarantined"
    ]
    previews = [p for report in reports for p in report.preview]
    return dg.MaterializeResult(
        metadata={
            "shards": ", ".join(context.partition_keys),
            "documents_chunked": sum(len(r.chunked) for r in reports),
            "documents_quarantined": sum(len(r.quarantined) for r in reports),
            "documents_recovered": sum(r.recovered for r in reports),
            "documents_removed": sum(r.removed for r in reports),
            "documents_skipped_changed_during_run": sum(len(r.skipped_changed) for r in reports),
            "chunks": sum(r.chunks for r in reports),
            "characters": sum(r.characters for r in reports),
            "chunker": ingestion_config.chunking_options().describe(),
            "seconds": round(time.perf_counter() - started, 3),
            "quarantine": quarantine_table(all_quarantined),
            "quarantined_total": len(all_quarantined),
            "preview": markdown_table(
                ["document", "chunks", "first chunk"],
                [(p["document"], p["chunks"], p["first"]) for p in previews],
            ),
        }
    )

"""Sensors: source changes become shard runs, and a complete new index version gets promoted."""

import hashlib
import logging
from collections import defaultdict

import dagster as dg

from lorechat_pipeline.core.catalog import owner_of
from lorechat_pipeline.core.change_detection import (
    ListingCursor,
    changed_shards,
    run_key,
    shard_digests,
)
from lorechat_pipeline.core.events import delete_messages, drain_queue, latest_per_key
from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names, shard_of
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.metrics import RUN_FAILURES, emit_metrics
from lorechat_pipeline.core.promotion import check_candidate_parity
from lorechat_pipeline.defs.automation.requests import shards_run_request
from lorechat_pipeline.defs.jobs import ingest_job, promote_job
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.event_queue import EventQueueResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import ObjectStoreResource
from lorechat_pipeline.resources.vector_store import VectorStoreResource
from lorechat_pipeline.settings import LorechatSettings

EMPTY_SHARD_DIGEST = shard_digests([], SHARD_COUNT)[shard_names(SHARD_COUNT)[0]]


def source_listing_requests(
    source: ObjectStoreResource, cursor: str | None
) -> tuple[list[dg.RunRequest], str]:
    digests = shard_digests(source.open().list_objects(), SHARD_COUNT)
    previous = ListingCursor.parse(cursor)
    shards = changed_shards(previous, digests)
    if previous is None:
        # Without a cursor every shard looks new; an empty one has nothing to ingest.
        shards = [shard for shard in shards if digests[shard] != EMPTY_SHARD_DIGEST]
    if not shards:
        return [], ListingCursor(digests).serialize()
    combined = hashlib.sha256("".join(f"{s}={digests[s]};" for s in shards).encode()).hexdigest()
    request = shards_run_request(
        shards,
        run_key=run_key("listing", f"{shards[0]}-{shards[-1]}", combined[:32]),
        tags={"lorechat/trigger": "listing"},
    )
    return [request], ListingCursor(digests).serialize()


def build_source_listing_sensor(settings: LorechatSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name="source_listing_sensor",
        job=ingest_job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=(
            dg.DefaultSensorStatus.STOPPED
            if settings.sqs_queue_url
            else dg.DefaultSensorStatus.RUNNING
        ),
        description=(
            "Lists the source each interval and runs the shards whose objects were added, "
            "modified (ETag or size) or deleted. The cursor holds one digest per shard."
        ),
    )
    def source_listing_sensor(
        context: dg.SensorEvaluationContext, source: ObjectStoreResource
    ) -> dg.SensorResult:
        requests, cursor = source_listing_requests(source, context.cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return source_listing_sensor


def source_event_requests(
    source: ObjectStoreResource, event_queue: EventQueueResource, log: logging.Logger | None
) -> list[dg.RunRequest]:
    client = event_queue.get_client()
    drained = drain_queue(
        client, event_queue.queue_url, max_messages=event_queue.max_messages_per_tick
    )
    keys_by_shard: dict[str, set[str]] = defaultdict(set)
    for event in latest_per_key(drained.events):
        key = source.relative_key(event.bucket, event.key)
        if key is None or not key:
            continue
        keys_by_shard[shard_of(owner_of(key), SHARD_COUNT)].add(key)
    requests = []
    if keys_by_shard:
        shards = sorted(keys_by_shard)
        keys = sorted(key for shard_keys in keys_by_shard.values() for key in shard_keys)
        digest = hashlib.sha256("\0".join(keys + drained.receipt_handles).encode()).hexdigest()
        requests.append(
            shards_run_request(
                shards,
                run_key=run_key("events", f"{shards[0]}-{shards[-1]}", digest[:32]),
                run_config={"ops": {"raw_documents": {"config": {"keys": keys}}}},
                tags={"lorechat/trigger": "events"},
            )
        )
    if drained.malformed and log:
        log.warning(f"{drained.malformed} queue messages were not S3 notifications (dropped)")
    # Deleted once the runs are built. A lost message is repaired by the nightly reconciliation.
    delete_messages(client, event_queue.queue_url, drained.receipt_handles)
    return requests


def build_source_event_sensor(settings: LorechatSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name="source_event_sensor",
        job=ingest_job,
        minimum_interval_seconds=min(settings.sensor_interval_seconds, 30),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Drains the SQS queue of the source bucket's S3 event notifications and runs the "
            "shards of the keys that changed, looking up only those keys (no bucket listing)."
        ),
    )
    def source_event_sensor(
        context: dg.SensorEvaluationContext,
        source: ObjectStoreResource,
        event_queue: EventQueueResource,
    ) -> dg.SensorResult:
        return dg.SensorResult(run_requests=source_event_requests(source, event_queue, context.log))

    return source_event_sensor


def promotion_request(
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> dg.RunRequest | dg.SkipReason:
    """A promote run once a version other than the current one is complete."""
    alias = vector_store.aliases().read()
    if alias is None:
        return dg.SkipReason("no current index version yet (the first one promotes itself)")
    model_id = embedder.model_id()
    chunker = ingestion_config.chunking_options().fingerprint()
    candidate: VectorIndex | None = None
    for table in vector_store.versions():
        if table == alias.table:
            continue
        version = vector_store.open_version(table)
        if (version.manifest.embedding_model, version.manifest.chunker_version) == (
            model_id,
            chunker,
        ):
            candidate = version
    if candidate is None:
        return dg.SkipReason(f"the configured version is current ({alias.table})")
    parity = check_candidate_parity(candidate, processed_store.open(), shard_names(SHARD_COUNT))
    if not parity.passed:
        return dg.SkipReason(f"{candidate.name} is not complete yet: {parity.describe()}")
    # Keyed by what the version holds (any backend): new rows since a refusal ask again.
    return dg.RunRequest(run_key=f"promote:{candidate.name}:{parity.content_digest[:16]}")


def build_promotion_sensor(settings: LorechatSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name="index_promotion_sensor",
        job=promote_job,
        minimum_interval_seconds=max(settings.sensor_interval_seconds, 60),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Starts a promotion once the index version of the current configuration is complete "
            "(every shard caught up); the promotion's checks decide whether the alias switches."
        ),
    )
    def index_promotion_sensor(
        processed_store: ObjectStoreResource,
        ingestion_config: IngestionConfig,
        embedder: EmbedderResource,
        vector_store: VectorStoreResource,
    ) -> dg.RunRequest | dg.SkipReason:
        return promotion_request(processed_store, ingestion_config, embedder, vector_store)

    return index_promotion_sensor


def build_run_failure_metrics_sensor() -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="run_failure_metrics_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Counts failed runs as the CloudWatch metric LoreChat/Pipeline RunFailures (an EMF "
            "line on the daemon's stdout), which the deployment's alarm watches."
        ),
    )
    def run_failure_metrics_sensor(context: dg.RunFailureSensorContext) -> None:
        emit_metrics({RUN_FAILURES: 1})
        context.log.info(f"run {context.dagster_run.run_id} failed: counted in {RUN_FAILURES}")

    return run_failure_metrics_sensor

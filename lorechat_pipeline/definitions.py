"""The LoreChat Pipeline code location: assets, checks, jobs and automation, per environment."""

import dagster as dg

from lorechat_pipeline.defs.automation.schedules import (
    build_reconciliation_schedule,
    index_gc_schedule,
)
from lorechat_pipeline.defs.automation.sensors import (
    build_promotion_sensor,
    build_run_failure_metrics_sensor,
    build_source_event_sensor,
    build_source_listing_sensor,
)
from lorechat_pipeline.defs.code_versions import with_code_versions
from lorechat_pipeline.defs.ingestion.assets import document_chunks, raw_documents
from lorechat_pipeline.defs.jobs import index_gc_job, ingest_job, promote_job
from lorechat_pipeline.defs.promotion.assets import index_alias, index_candidate
from lorechat_pipeline.defs.resources import build_resources
from lorechat_pipeline.defs.vectorization.assets import chunk_embeddings, vector_index
from lorechat_pipeline.defs.vectorization.checks import (
    vector_index_manifest,
    vector_index_row_count,
)
from lorechat_pipeline.settings import LorechatSettings, load_settings


def build_definitions(settings: LorechatSettings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    resources = build_resources(settings)
    sensors = [build_source_listing_sensor(settings), build_promotion_sensor(settings)]
    if settings.sqs_queue_url:
        sensors.append(build_source_event_sensor(settings))
    if settings.emits_cloudwatch_metrics:
        sensors.append(build_run_failure_metrics_sensor())
    assets = [raw_documents, document_chunks, chunk_embeddings, vector_index]
    return dg.Definitions(
        assets=with_code_versions([*assets, index_candidate, index_alias], resources),
        asset_checks=[vector_index_row_count, vector_index_manifest],
        jobs=[ingest_job, promote_job, index_gc_job],
        sensors=sensors,
        schedules=[build_reconciliation_schedule(settings), index_gc_schedule],
        resources=resources,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()

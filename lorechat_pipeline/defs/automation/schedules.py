"""Schedules: nightly reconciliation of the whole source, and index version clean-up."""

from datetime import UTC, datetime

import dagster as dg

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names
from lorechat_pipeline.defs.automation.requests import shards_run_request
from lorechat_pipeline.defs.jobs import index_gc_job, ingest_job
from lorechat_pipeline.settings import LorechatSettings


def reconciliation_requests(scheduled: str) -> list[dg.RunRequest]:
    # Every shard, every night, in one run: repairs missed events, propagates deletions (behind
    # the deletion guard) and backfills shards a configuration change left stale.
    return [
        shards_run_request(
            shard_names(SHARD_COUNT),
            run_key=f"reconcile:{scheduled}",
            tags={"lorechat/trigger": "reconcile"},
        )
    ]


def build_reconciliation_schedule(settings: LorechatSettings) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="reconciliation_schedule",
        job=ingest_job,
        cron_schedule=settings.reconcile_cron,
        execution_timezone=settings.reconcile_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            "Diffs a full listing of the source against the index in every shard: missed events "
            "are repaired, deletions propagate (unless the deletion guard stops them) and shards "
            "a chunker or model change left stale are rebuilt."
        ),
    )
    def reconciliation_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        # Manual evaluations (the UI's "test schedule") have no scheduled time.
        moment = context.scheduled_execution_time or datetime.now(UTC)
        return reconciliation_requests(moment.isoformat())

    return reconciliation_schedule


index_gc_schedule = dg.ScheduleDefinition(
    name="index_gc_schedule",
    job=index_gc_job,
    cron_schedule="30 4 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Drops index versions retired longer ago than LORECHAT_INDEX_RETENTION_HOURS.",
)

"""Reconciliation: the nightly schedule covers every shard, and the deletion guard keeps a bad
listing from wiping an index unless deletions are confirmed."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names
from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.defs.automation.requests import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
)
from lorechat_pipeline.defs.automation.schedules import build_reconciliation_schedule
from lorechat_pipeline.runner import IngestFailed
from lorechat_pipeline.settings import load_settings
from tests.pipeline.conftest import PipelineFactory, index_snapshot, write


def handbook(folder: Path, count: int) -> None:
    for number in range(count):
        write(
            folder,
            f"handbook/page-{number:02d}.md",
            f"# Page {number}\n\nPolicy number {number} covers topic {number * 7} in detail.",
        )
    write(folder, "misc/readme.txt", "A file in another collection.")


def test_reconciliation_schedule_requests_every_shard_once_per_tick() -> None:
    settings = load_settings(reconcile_cron="15 2 * * *", reconcile_timezone="Europe/Paris")
    schedule = build_reconciliation_schedule(settings)
    repository = build_definitions(settings).get_repository_def()
    assert schedule.cron_schedule == "15 2 * * *"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    night = datetime(2026, 11, 22, 1, 15, tzinfo=UTC)

    def tick() -> list[dg.RunRequest]:
        context = dg.build_schedule_context(
            scheduled_execution_time=night, repository_def=repository
        )
        return list(schedule.evaluate_tick(context).run_requests or [])

    requests = tick()
    repeated = tick()
    assert [r.run_key for r in repeated] == [r.run_key for r in requests]
    # One run over every shard: the parser workers and the model warm up once a night.
    (request,) = requests
    shards = shard_names(SHARD_COUNT)
    assert request.tags[PARTITION_RANGE_START_TAG] == shards[0]
    assert request.tags[PARTITION_RANGE_END_TAG] == shards[-1]
    assert request.tags["lorechat/trigger"] == "reconcile"
    assert request.tags["lorechat/shards"] == ",".join(shards)
    next_night = build_reconciliation_schedule(settings).evaluate_tick(
        dg.build_schedule_context(
            scheduled_execution_time=night + timedelta(days=1), repository_def=repository
        )
    )
    assert [r.run_key for r in next_night.run_requests or []] != [request.run_key]


def test_deletion_guard_refuses_a_wipe_and_confirmation_lets_it_through(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    handbook(source, 20)
    pipeline = make_pipeline(source, deletion_guard_share=0.2, deletion_guard_min_documents=5)
    pipeline.ingest()
    before = index_snapshot(pipeline)

    # A listing that comes back empty (an unmounted folder, a wrong prefix) must not delete.
    shutil.rmtree(source / "handbook")
    with pytest.raises(IngestFailed, match=r"refusing to delete 20 of 20 documents .*'handbook'"):
        pipeline.ingest()
    assert index_snapshot(pipeline) == before
    # Still refused on the next try: the guarded shards recorded nothing.
    with pytest.raises(IngestFailed, match="--confirm-deletions"):
        pipeline.ingest()

    summary = pipeline.ingest(confirm_deletions=True)
    assert summary.deleted == 20
    remaining = {document for document, _, _ in index_snapshot(pipeline).values()}
    assert remaining == {"misc/readme.txt"}


def test_everyday_deletions_pass_the_guard(tmp_path: Path, make_pipeline: PipelineFactory) -> None:
    source = tmp_path / "source"
    handbook(source, 20)
    pipeline = make_pipeline(source, deletion_guard_share=0.2, deletion_guard_min_documents=5)
    pipeline.ingest()
    # 3 of 20 (15%) is under the share; a whole 1-document collection is under the minimum.
    for number in range(3):
        (source / "handbook" / f"page-{number:02d}.md").unlink()
    (source / "misc" / "readme.txt").unlink()
    summary = pipeline.ingest()
    assert summary.deleted == 4
    documents = {document for document, _, _ in index_snapshot(pipeline).values()}
    assert len(documents) == 17
    assert "misc/readme.txt" not in documents

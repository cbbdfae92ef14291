"""Parsing the next shard while the current one embeds: the same index, nothing parsed twice,
and a rejection found ahead is quarantined by the document's own run."""

import threading
import time
from pathlib import Path

import dagster as dg

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.core.parsing.turns import PoolTurns
from lorechat_pipeline.core.stages.parse_ahead import parse_ahead
from lorechat_pipeline.runner import Pipeline
from tests.pipeline.conftest import PipelineFactory, index_snapshot, write
from tests.pipeline.test_recovery import many_documents


def chunk_step_metadata(pipeline: Pipeline, run_ids: list[str]) -> list[dict[str, object]]:
    instance = pipeline.instance()
    found = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            materialization = record.asset_materialization
            if materialization and materialization.asset_key.path[-1] == "document_chunks":
                found.append(
                    {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
                )
    return found


def test_parse_ahead_builds_the_same_index_and_later_runs_adopt_its_work(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    many_documents(source, 40)

    serial = make_pipeline(source, home=tmp_path / "serial")
    serial.parse_ahead = False
    serial_summary = serial.ingest()
    overlapped = make_pipeline(source, home=tmp_path / "overlapped")
    summary = overlapped.ingest()

    assert index_snapshot(overlapped) == index_snapshot(serial)
    assert summary.shards_run == serial_summary.shards_run
    assert len(summary.shards_run) > 2
    steps = chunk_step_metadata(overlapped, summary.run_ids)
    assert len(steps) == len(summary.shards_run)
    # The first run parses its own shard; every later one finds most of its documents parsed.
    assert steps[0]["documents_recovered"] == 0
    chunked = sum(int(step["documents_chunked"]) for step in steps)  # type: ignore[call-overload]
    adopted = sum(int(step["documents_recovered"]) for step in steps)  # type: ignore[call-overload]
    assert chunked == 40  # adopted documents count as chunked by their run (metrics, UI)
    assert 0 < adopted < 40
    serial_steps = chunk_step_metadata(serial, serial_summary.run_ids)
    assert sum(int(s["documents_recovered"]) for s in serial_steps) == 0  # type: ignore[call-overload]


def test_a_document_rejected_ahead_is_quarantined_with_its_reason_by_its_run(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    many_documents(source, 6)
    write(source, "notes/blank.md", "   \n\n  \n")
    pipeline = make_pipeline(source)
    plan = pipeline.plan()
    shard = shard_of("notes/blank.md", SHARD_COUNT)
    config = pipeline.config

    report = parse_ahead(
        pipeline.source,
        pipeline.processed,
        shard,
        plan.listings[shard],
        shard_count=SHARD_COUNT,
        layout=config.chunk_layout(),
        max_document_bytes=config.max_document_bytes,
        open_parser=config.open_parser_in_background,
        stop=threading.Event(),
    )
    assert report.parsed >= 1
    marker = list((tmp_path / "home").rglob("*.rejected.json"))
    assert len(marker) == 1

    summary = pipeline.ingest()
    assert [entry.document for entry in pipeline.quarantine()] == ["notes/blank.md"]
    assert pipeline.quarantine()[0].reason == "empty"
    steps = chunk_step_metadata(pipeline, summary.run_ids)
    assert sum(int(s["documents_recovered"]) for s in steps) >= report.parsed  # type: ignore[call-overload]
    # Adopted into the ledger, the marker has served its purpose.
    assert not list((tmp_path / "home").rglob("*.rejected.json"))


def test_a_chunk_step_waiting_for_the_pool_goes_before_a_parse_ahead() -> None:
    turns = PoolTurns()
    order: list[str] = []
    background_holds = threading.Event()

    def background() -> None:
        with turns.background() as acquired:
            assert acquired
            background_holds.set()
            # A parse-ahead checks between documents whether a run's chunk step is waiting.
            while not turns.should_step_aside():
                time.sleep(0.01)
            order.append("background steps aside")
        with turns.background() as acquired:
            order.append("background again")

    def foreground() -> None:
        with turns.foreground():
            order.append("foreground")
            time.sleep(0.2)  # the background must not get the pool back meanwhile

    worker = threading.Thread(target=background)
    worker.start()
    assert background_holds.wait(10)
    foreground_thread = threading.Thread(target=foreground)
    foreground_thread.start()
    worker.join(10)
    foreground_thread.join(10)
    assert order == ["background steps aside", "foreground", "background again"]


def test_a_stopped_parse_ahead_gives_up_waiting_for_the_pool() -> None:
    turns = PoolTurns()
    stop = threading.Event()
    outcome: list[bool] = []
    with turns.foreground():
        waiter = threading.Thread(target=lambda: outcome.append(turns.background(stop).__enter__()))
        waiter.start()
        stop.set()
        waiter.join(10)
    assert outcome == [False]

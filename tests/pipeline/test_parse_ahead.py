"""Working ahead: parsing the next shard while the current one embeds, and embedding it while
the current one writes its index. The same index, nothing parsed or embedded twice, and a
rejection found ahead is quarantined by the document's own run."""

import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.core.planning import IngestPlan
from lorechat_pipeline.core.stages import embedding as embedding_stage
from lorechat_pipeline.core.stages.embedding import embed_ahead
from lorechat_pipeline.core.stages.parse_ahead import ParseAheadReport, parse_ahead
from lorechat_pipeline.core.tables import read_table
from lorechat_pipeline.core.turns import Turns
from lorechat_pipeline.runner import Pipeline
from tests.pipeline.conftest import PipelineFactory, index_snapshot, write
from tests.pipeline.test_recovery import many_documents


def step_metadata(
    pipeline: Pipeline, run_ids: list[str], asset: str = "document_chunks"
) -> list[dict[str, object]]:
    instance = pipeline.instance()
    found = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            materialization = record.asset_materialization
            if materialization and materialization.asset_key.path[-1] == asset:
                found.append(
                    {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
                )
    return found


def parse_shard_ahead(pipeline: Pipeline, plan: IngestPlan, shard: str) -> ParseAheadReport:
    config = pipeline.config
    return parse_ahead(
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


def total(steps: list[dict[str, object]], name: str) -> int:
    return sum(int(step[name]) for step in steps)  # type: ignore[call-overload]


def test_working_ahead_builds_the_same_index_and_later_runs_adopt_its_work(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    many_documents(source, 40)

    serial = make_pipeline(source, home=tmp_path / "serial")
    serial.work_ahead = False
    serial_summary = serial.ingest()
    overlapped = make_pipeline(source, home=tmp_path / "overlapped")
    summary = overlapped.ingest()

    assert index_snapshot(overlapped) == index_snapshot(serial)
    assert summary.shards_run == serial_summary.shards_run
    assert len(summary.shards_run) > 2
    steps = step_metadata(overlapped, summary.run_ids)
    assert len(steps) == len(summary.shards_run)
    # The first run parses its own shard; every later one finds most of its documents parsed.
    assert steps[0]["documents_recovered"] == 0
    assert total(steps, "documents_chunked") == 40  # adopted ones count as chunked by their run
    assert 0 < total(steps, "documents_recovered") < 40
    assert total(step_metadata(serial, serial_summary.run_ids), "documents_recovered") == 0
    # The rows are folded into the index's indexes once, by the last run.
    folded = [
        step["folded_into_indexes"]
        for step in step_metadata(overlapped, summary.run_ids, asset="vector_index")
    ]
    assert folded == [False] * (len(summary.run_ids) - 1) + [True]
    assert not overlapped.open_index().has_unfolded_rows()

    # Embedded ahead while an earlier run wrote its index: the shard's step adopted the vectors
    # (the snapshots above are equal to 5 decimals), and nothing was embedded twice.
    embedded = step_metadata(overlapped, summary.run_ids, "chunk_embeddings")
    assert embedded[0]["documents_recovered"] == 0
    assert total(embedded, "documents_embedded") + total(embedded, "documents_recovered") == 40
    assert total(embedded, "documents_recovered") > 0
    assert total(embedded, "chunks") < len(index_snapshot(overlapped))
    serial_embedded = step_metadata(serial, serial_summary.run_ids, "chunk_embeddings")
    assert total(serial_embedded, "documents_recovered") == 0
    assert total(serial_embedded, "chunks") == len(index_snapshot(serial))


def test_a_document_rejected_ahead_is_quarantined_with_its_reason_by_its_run(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    many_documents(source, 6)
    write(source, "notes/blank.md", "   \n\n  \n")
    pipeline = make_pipeline(source)
    plan = pipeline.plan()
    report = parse_shard_ahead(pipeline, plan, shard_of("notes/blank.md", SHARD_COUNT))
    assert report.parsed >= 1
    marker = list((tmp_path / "home").rglob("*.rejected.json"))
    assert len(marker) == 1

    summary = pipeline.ingest()
    assert [entry.document for entry in pipeline.quarantine()] == ["notes/blank.md"]
    assert pipeline.quarantine()[0].reason == "empty"
    steps = step_metadata(pipeline, summary.run_ids)
    assert sum(int(s["documents_recovered"]) for s in steps) >= report.parsed  # type: ignore[call-overload]
    # Adopted into the ledger, the marker has served its purpose.
    assert not list((tmp_path / "home").rglob("*.rejected.json"))


def test_a_chunk_step_waiting_for_the_pool_goes_before_a_parse_ahead() -> None:
    turns = Turns()
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
    turns = Turns()
    stop = threading.Event()
    outcome: list[bool] = []
    with turns.foreground():
        waiter = threading.Thread(target=lambda: outcome.append(turns.background(stop).__enter__()))
        waiter.start()
        stop.set()
        waiter.join(10)
    assert outcome == [False]


def test_work_ahead_gives_up_waiting_once_its_shards_own_step_asks() -> None:
    turns = Turns()
    outcome: list[bool] = []
    with turns.foreground("00"):  # the previous shard's step holds the encoder
        asked = turns.asked("01")
        waiter = threading.Thread(
            target=lambda: outcome.append(turns.background(ahead_of=("01", asked)).__enter__())
        )
        waiter.start()
        time.sleep(0.1)
        assert outcome == []  # waits for the holder, who is not its shard's step
        # Shard 01's step asks: what the waiter meant to do ahead is that step's now, and
        # the waiter must not wait for the step to finish it.
        step = threading.Thread(target=lambda: turns.foreground("01").__enter__())
        step.start()
        waiter.join(10)
        assert outcome == [False]
    step.join(10)


def test_work_ahead_takes_the_turn_between_steps_and_steps_aside_for_the_next() -> None:
    turns = Turns()
    with turns.foreground("00"):
        pass
    with turns.background(ahead_of=("01", turns.asked("01"))) as acquired:
        assert acquired
        assert not turns.should_step_aside()
        step = threading.Thread(target=lambda: turns.foreground("01").__enter__())
        step.start()
        deadline = time.monotonic() + 10
        while not turns.should_step_aside() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert turns.should_step_aside()
    step.join(10)


def test_an_embed_ahead_writes_what_the_step_adopts_and_stops_when_the_step_asks(
    tmp_path: Path, make_pipeline: PipelineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    many_documents(source, 40)
    pipeline = make_pipeline(source)
    plan = pipeline.plan()
    shard = max(plan.listings, key=lambda s: len(plan.listings[s]))
    processed = pipeline.processed
    parsed = parse_shard_ahead(pipeline, plan, shard)
    assert len(parsed.chunked) >= 3
    layout, model = pipeline.layout, pipeline.embedder
    turns = Turns()
    # One document per encode, and the shard's step arrives during the first one.
    monkeypatch.setattr(embedding_stage, "CHUNKS_PER_ENCODE_AHEAD", 1)
    step: list[threading.Thread] = []

    class StepArrivesWhileEncoding:
        dimension = model.dimension

        def embed_documents(self, texts: list[str]) -> np.ndarray:
            if not step:
                step.append(threading.Thread(target=lambda: turns.foreground(shard).__enter__()))
                step[0].start()
                while not turns.should_step_aside():
                    time.sleep(0.01)
            return model.embed_documents(texts)

    report = embed_ahead(
        processed,
        shard,
        parsed.chunked,
        layout=layout,
        embedder=StepArrivesWhileEncoding(),  # type: ignore[arg-type]
        stop=threading.Event(),
        asked_before=turns.asked(shard),
        turns=turns,
    )
    step[0].join(10)
    assert report.documents == 1  # stepped aside after the call under way
    first_id, first_fp = parsed.chunked[0]
    stored = read_table(processed, layout.embeddings(shard, first_id, first_fp))
    assert stored is not None
    chunks = read_table(processed, layout.chunks(shard, first_id, first_fp))
    assert chunks is not None
    expected = model.embed_documents(chunks.column("text").to_pylist())
    vectors = np.asarray(stored.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert stored.column("chunk_id").to_pylist() == chunks.column("chunk_id").to_pylist()
    for doc_id, content_fp in parsed.chunked[1:]:
        assert not processed.exists(layout.embeddings(shard, doc_id, content_fp))

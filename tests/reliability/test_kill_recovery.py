"""kill -9 of `lorechat ingest` inside each stage, then a re-run: the index equals a clean run's.

The ingestion is the real console script in its own process group. The test watches the run's
progress where Dagster records it (the event log of the instance under LORECHAT_HOME): once the
step of the chosen stage has started, and for the chunking stage once a parser worker is up,
the whole group gets SIGKILL. The event log then shows the stage started and never finished,
which proves the kill landed inside it. After that: no process of the killed ingestion is left
(parser workers run in their own process groups, so they must notice on their own), the killed
run does not stay STARTED once the CLI runs again, and a re-run converges on the clean index.
"""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest

from lorechat_pipeline.runner import RUN_PID_TAG, Pipeline
from lorechat_pipeline.settings import load_settings
from tests.pipeline.conftest import index_snapshot
from tests.pipeline.faults import keys_in_shards, write_notes

LORECHAT = Path(sys.executable).parent / "lorechat"
STAGE_DEADLINE_SECONDS = 600.0  # generous: the machine may be busy; a hang fails, not a pass
EXIT_DEADLINE_SECONDS = 30.0  # for parser workers to notice that their parent is gone
SHARDS = (4, 11)  # two shard runs: the kill can land in the second, after the first is indexed
SMALL_CHUNKS = {
    "chunk_max_characters": 300,
    "chunk_new_after_characters": 250,
    "chunk_combine_under_characters": 100,
}
PROMOTION_CHUNKS = {**SMALL_CHUNKS, "chunk_max_characters": 280}  # a second index version


@dataclass(frozen=True)
class Corpus:
    source: Path
    documents: int


@dataclass(frozen=True)
class CleanIndex:
    rows: dict[str, Any]
    table: str | None
    manifest: str


def settings_env(home: Path, source: Path, chunks: dict[str, int]) -> dict[str, str]:
    env = {**os.environ, "LORECHAT_HOME": str(home), "LORECHAT_SOURCE": str(source)}
    env["LORECHAT_PARSE_WORKERS"] = "1"
    env |= {f"LORECHAT_{name.upper()}": str(value) for name, value in chunks.items()}
    return env


def open_pipeline(home: Path, source: Path, chunks: dict[str, int]) -> Pipeline:
    return Pipeline.from_settings(
        load_settings(home=home, source=str(source), parse_workers=1, **chunks)
    )


def clean_index(pipeline: Pipeline) -> CleanIndex:
    current = pipeline.open_current_index()
    return CleanIndex(
        index_snapshot(pipeline),
        pipeline.vector_store.aliases().current_table(),
        current.manifest.to_json(),
    )


def make_corpus(folder: Path, per_shard: int) -> Corpus:
    keys = keys_in_shards("docs/page", per_shard * len(SHARDS), SHARDS)
    write_notes(folder, keys, paragraphs=10)
    return Corpus(folder, len(keys))


@dataclass
class Killed:
    run_id: str
    run_number: int  # 1 for the first Dagster run of the killed ingestion
    processes: list[psutil.Process]


class EventLog:
    """Dagster's SQLite run and event storage under the home, read-only while the ingestion
    writes it (opening a DagsterInstance would also migrate or stamp the storage, racing the
    ingestion's own first open)."""

    def __init__(self, dagster_home: Path) -> None:
        self.history = dagster_home / "history"

    def _query(self, path: Path, sql: str, *args: str) -> list[tuple[Any, ...]]:
        if not path.exists():
            return []
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.Error:  # created but not yet initialised, or busy: ask again
            return []

    def runs_of_process(self, pid: int) -> list[str]:
        rows = self._query(
            self.history / "runs.db",
            "SELECT runs.run_id FROM runs JOIN run_tags ON runs.run_id = run_tags.run_id "
            "WHERE run_tags.key = ? AND run_tags.value = ? ORDER BY runs.id",
            RUN_PID_TAG,
            str(pid),
        )
        return [row[0] for row in rows]

    def step_events(self, run_id: str, step: str) -> set[str]:
        rows = self._query(
            self.history / "runs" / f"{run_id}.db",
            "SELECT dagster_event_type FROM event_logs WHERE step_key = ?",
            step,
        )
        return {row[0] for row in rows}


def parser_workers(process: psutil.Process) -> list[psutil.Process]:
    workers = []
    for child in process.children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.NoSuchProcess:
            continue
    return workers


class KillLandedLate(AssertionError):
    """A step that adopted work done ahead can end between two polls of the event log."""


KILL_ATTEMPTS = 3


def kill_inside(
    home: Path, env: dict[str, str], step: str, run_number: int, tmp_path: Path
) -> Killed:
    """Start `lorechat ingest`, SIGKILL its process group inside `step` of its n-th run."""
    log = (tmp_path / f"killed-{step}.log").open("wb")
    process = subprocess.Popen(
        [str(LORECHAT), "ingest", "--json"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a service manager would start it
    )
    ingestion = psutil.Process(process.pid)
    events = EventLog(home / "dagster")
    deadline = time.monotonic() + STAGE_DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"killed-{step}.log").read_text()[-3000:]
            time.sleep(0.05)
            runs = events.runs_of_process(process.pid)
            if len(runs) < run_number:
                continue
            run_id = runs[run_number - 1]
            if "STEP_START" not in events.step_events(run_id, step):
                continue
            if step == "document_chunks" and not parser_workers(ingestion):
                continue
            processes = [ingestion, *ingestion.children(recursive=True)]
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            seen = events.step_events(run_id, step)
            if seen & {"STEP_SUCCESS", "STEP_FAILURE"}:
                raise KillLandedLate(f"the kill landed after {step} finished: {seen}")
            return Killed(run_id, run_number, processes)
        raise AssertionError(f"{step} of run {run_number} did not start in time")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def assert_all_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=EXIT_DEADLINE_SECONDS)
    described = []
    for survivor in alive:
        try:
            described.append(f"{survivor.pid} {' '.join(survivor.cmdline())[:120]}")
            survivor.kill()
        except psutil.NoSuchProcess:
            continue
    assert not described, f"processes of the killed ingestion survived: {described}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("kill") / "source", per_shard=12)


@pytest.fixture(scope="module")
def clean(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CleanIndex]:
    pipeline = open_pipeline(tmp_path_factory.mktemp("clean"), corpus.source, SMALL_CHUNKS)
    pipeline.ingest()
    yield clean_index(pipeline)
    pipeline.close()


def recover_and_compare(
    home: Path, corpus: Corpus, chunks: dict[str, int], killed: Killed, expected: CleanIndex
) -> None:
    assert_all_gone(killed.processes)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        run = instance.get_run_by_id(killed.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.STARTED  # as kill -9 left it

    pipeline = open_pipeline(home, corpus.source, chunks)
    pipeline.ingest()
    assert clean_index(pipeline) == expected
    assert pipeline.ingest().shards_run == []  # nothing left to do
    with pipeline.instance() as instance:
        run = instance.get_run_by_id(killed.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.FAILURE
        started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
        assert instance.get_runs(filters=started) == []
    pipeline.close()


# The chunking stage of the second shard run (the first shard is already indexed, a parser
# worker is up) by default; every stage behind -m slow.
KILL_POINTS = [
    pytest.param("raw_documents", 1, marks=pytest.mark.slow),
    pytest.param("document_chunks", 2),
    pytest.param("chunk_embeddings", 1, marks=pytest.mark.slow),
    pytest.param("vector_index", 2, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("step", "run_number"), KILL_POINTS)
def test_kill_inside_a_stage_then_rerun_equals_a_clean_run(
    step: str, run_number: int, corpus: Corpus, clean: CleanIndex, tmp_path: Path
) -> None:
    for attempt in range(1, KILL_ATTEMPTS + 1):
        home = tmp_path / f"home-{attempt}"
        env = settings_env(home, corpus.source, SMALL_CHUNKS)
        try:
            killed = kill_inside(home, env, step, run_number, tmp_path)
        except KillLandedLate:
            if attempt == KILL_ATTEMPTS:
                raise
            continue
        recover_and_compare(home, corpus, SMALL_CHUNKS, killed, clean)
        return


@pytest.mark.slow
def test_kill_inside_promotion_then_rerun_promotes_the_clean_version(
    corpus: Corpus, tmp_path: Path
) -> None:
    """A new index version (another chunk size) is built, and the promotion is killed while
    its candidate is being judged: the alias keeps naming the old version until a re-run
    promotes the new one, equal to what a clean run of the new configuration builds."""
    expected_pipeline = open_pipeline(tmp_path / "clean", corpus.source, PROMOTION_CHUNKS)
    expected_pipeline.ingest()
    expected = clean_index(expected_pipeline)
    expected_pipeline.close()

    home = tmp_path / "home"
    first = open_pipeline(home, corpus.source, SMALL_CHUNKS)
    first.ingest()
    old_table = first.vector_store.aliases().current_table()
    first.close()
    assert old_table != expected.table

    env = settings_env(home, corpus.source, PROMOTION_CHUNKS)
    killed = kill_inside(home, env, "index_candidate", len(SHARDS) + 1, tmp_path)
    again = open_pipeline(home, corpus.source, PROMOTION_CHUNKS)
    assert again.vector_store.aliases().current_table() == old_table
    again.close()
    recover_and_compare(home, corpus, PROMOTION_CHUNKS, killed, expected)

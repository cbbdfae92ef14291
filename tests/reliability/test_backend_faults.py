"""Embedding and vector-store failures mid-batch: retried, or the run gives up and the index the
searches read is left as it was; a re-run after the fault clears converges on the clean index.

The embedder is the real packaged model and the stores are the real LanceDB and the Upstash
contract server on loopback; only the failures are injected (tests/pipeline/faults.py, and the
contract server's own `fail_next`). The corpus sits in one shard, so one Dagster run does all
the work and "the run" is that shard's run; small chunks give more than one embedding batch.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lorechat_pipeline.core.aliases import IndexAlias
from lorechat_pipeline.core.backends.upstash_client import TOKEN_SETTING, URL_SETTING
from lorechat_pipeline.core.backends.upstash_index import SYSTEM_NAMESPACE
from lorechat_pipeline.defs.ingestion.assets import TRANSIENT_RETRY
from lorechat_pipeline.runner import IngestFailed, Pipeline
from lorechat_pipeline.settings import load_settings
from tests.backends.upstash_contract_server import (
    ApiError,
    RunningServer,
    upstash_contract_server,
)
from tests.pipeline.conftest import index_snapshot
from tests.pipeline.faults import (
    Fault,
    InjectedFault,
    keys_in_shards,
    with_crashing_embedder,
    with_failing_lancedb,
    write_notes,
)

ATTEMPTS = 1 + TRANSIENT_RETRY.max_retries  # a step's attempts before its run gives up
SMALL_CHUNKS = {
    "chunk_max_characters": 120,
    "chunk_new_after_characters": 100,
    "chunk_combine_under_characters": 50,
}
SHARD = 5
KEYS = keys_in_shards("notes/note", 28, [SHARD])
PARAGRAPHS = 12  # ~12 chunks a note: ~330 chunks, two embedding batches of at most 256

UPSTASH_TOKEN = "AXfault-injection-token"

Snapshot = dict[str, Any]


def write_v1(source: Path) -> None:
    write_notes(source, KEYS, PARAGRAPHS)


def write_v2(source: Path) -> None:
    """Changed, added and deleted documents, all in the same shard (two embedding batches)."""
    write_notes(source, KEYS[:20], PARAGRAPHS, version=2)
    write_notes(source, keys_in_shards("notes/added", 4, [SHARD]), PARAGRAPHS)
    for key in KEYS[-3:]:
        (source / key).unlink()


def open_pipeline(source: Path, home: Path, **overrides: Any) -> Pipeline:
    settings = load_settings(
        home=home, source=str(source), parse_workers=1, **SMALL_CHUNKS, **overrides
    )
    return Pipeline.from_settings(settings)


@dataclass
class State:
    rows: Snapshot
    alias: IndexAlias | None


def state(pipeline: Pipeline) -> State:
    return State(index_snapshot(pipeline), pipeline.vector_store.aliases().read())


@dataclass
class CleanIndexes:
    v1: Snapshot
    v2: Snapshot
    dimension: int


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CleanIndexes]:
    """What clean runs produce from the two versions of the corpus."""
    root = tmp_path_factory.mktemp("clean")
    source = root / "source"
    write_v1(source)
    first = open_pipeline(source, root / "v1")
    first.ingest()
    v1 = index_snapshot(first)
    write_v2(source)
    second = open_pipeline(source, root / "v2")
    second.ingest()
    yield CleanIndexes(v1, index_snapshot(second), second.embedder.dimension)
    first.close()
    second.close()


def retries(pipeline: Pipeline, run_id: str, step: str) -> int:
    with pipeline.instance() as instance:
        events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    return sum(1 for event in events if event.step_key == step)


@pytest.fixture
def encoder_calls_of_256(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shard's chunks in two calls of the encoder, so that the second one can fail."""
    monkeypatch.setattr("lorechat_pipeline.core.stages.embedding.CHUNKS_PER_ENCODE", 256)


@pytest.mark.usefixtures("encoder_calls_of_256")
def test_embedding_failure_mid_batch_is_retried_or_leaves_the_index_unchanged(
    tmp_path: Path, clean: CleanIndexes
) -> None:
    source = tmp_path / "source"
    write_v1(source)
    settings = open_pipeline(source, tmp_path / "home").settings

    # Transient: the second batch fails once; the step's retry embeds it (the first batch's
    # vectors are already stored) and the run succeeds with the clean index.
    transient = Fault("embedding-transient", first=2, times=1)
    flaky = with_crashing_embedder(settings, transient)
    summary = flaky.ingest()
    assert transient.failures == 1
    assert retries(flaky, summary.run_ids[0], "chunk_embeddings") == 1
    assert index_snapshot(flaky) == clean.v1
    before = state(flaky)
    flaky.close()

    # Persistent: every batch from the second on fails; the run gives up after its retries and
    # the index is exactly what it was (the shard's rows and the alias), though the first
    # batch's vectors are stored (and reused by the next run).
    write_v2(source)
    persistent = Fault("embedding-persistent", first=2, times=None)
    broken = with_crashing_embedder(settings, persistent)
    with pytest.raises(IngestFailed, match="chunk_embeddings"):
        broken.ingest()
    assert persistent.failures == ATTEMPTS
    assert state(broken) == before
    broken.close()

    # The fault cleared: a re-run converges on what a clean run of the new corpus produces.
    recovered = Pipeline.from_settings(settings)
    assert recovered.ingest().shards_run == [f"shard-{SHARD:03d}"]
    assert index_snapshot(recovered) == clean.v2
    assert recovered.ingest().shards_run == []
    recovered.close()


@pytest.fixture
def commits_of_eight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several writes per shard (500 documents each by default; one all_or_nothing block), so
    that one fails mid-shard."""
    monkeypatch.setattr("lorechat_pipeline.core.stages.indexing.DOCUMENTS_PER_COMMIT", 8)


@pytest.mark.usefixtures("commits_of_eight")
def test_lancedb_write_failure_mid_shard_is_retried(tmp_path: Path, clean: CleanIndexes) -> None:
    """The second commit fails once; the retried step rewrites what the index lacks."""
    source = tmp_path / "source"
    write_v1(source)
    settings = open_pipeline(source, tmp_path / "home").settings
    transient = Fault("lancedb-transient", first=2, times=1)
    flaky = with_failing_lancedb(settings, transient)
    summary = flaky.ingest()
    assert transient.failures == 1
    assert retries(flaky, summary.run_ids[0], "vector_index") == 1
    assert index_snapshot(flaky) == clean.v1
    flaky.close()


@pytest.mark.slow
@pytest.mark.usefixtures("commits_of_eight")
def test_lancedb_persistent_write_failure_mid_shard_then_a_rerun_converges(
    tmp_path: Path, clean: CleanIndexes
) -> None:
    """The shard's second write (commit) and every later one fail. The shard's writes are one
    block, which undoes the first (restores the table's version before the block), so each
    attempt leaves the index exactly as it was, and the alias does not move."""
    source = tmp_path / "source"
    write_v1(source)
    first = open_pipeline(source, tmp_path / "home")
    first.ingest()
    settings, before = first.settings, state(first)
    first.close()

    write_v2(source)
    persistent = Fault("lancedb-persistent", first=2, times=None)
    broken = with_failing_lancedb(settings, persistent)
    with pytest.raises(IngestFailed, match="vector_index"):
        broken.ingest()
    assert persistent.failures == ATTEMPTS
    assert persistent.calls == ATTEMPTS + 1  # the first attempt's first commit went in, undone
    assert state(broken) == before
    broken.close()

    recovered = Pipeline.from_settings(settings)
    recovered.ingest()
    assert index_snapshot(recovered) == clean.v2
    recovered.close()


@contextlib.contextmanager
def upstash_with_failing_upserts(
    fault: Fault, statuses: tuple[int, ...], dimension: int, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    """The Upstash contract server, its upserts of chunks (not of LoreChat's own records: the
    alias, the manifests) failing as `fault` says, with `statuses` in turn; every other call
    is served."""
    with upstash_contract_server(token=UPSTASH_TOKEN, dimension=dimension) as upstash:
        serve = upstash.state.upsert

        def upsert(namespace: str, body: Any) -> str:
            if namespace != SYSTEM_NAMESPACE:
                try:
                    fault.hit()
                except InjectedFault as error:
                    status = statuses[(fault.failures - 1) % len(statuses)]
                    raise ApiError(status, f"Service error ({error})") from error
            return serve(namespace, body)

        monkeypatch.setattr(upstash.state, "upsert", upsert)
        monkeypatch.setenv(URL_SETTING, upstash.url)
        monkeypatch.setenv(TOKEN_SETTING, UPSTASH_TOKEN)
        yield upstash


@pytest.mark.usefixtures("commits_of_eight")
def test_upstash_errors_mid_upsert_are_retried(
    tmp_path: Path, clean: CleanIndexes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500, then a 429, on the second upsert: the client's own retries ride them out, and
    the index equals the clean one (the same chunk ids and vectors as LanceDB's)."""
    source = tmp_path / "source"
    write_v1(source)
    fault = Fault("upstash-transient", first=2, times=2)
    with upstash_with_failing_upserts(fault, (500, 429), clean.dimension, monkeypatch):
        pipeline = open_pipeline(source, tmp_path / "home", vector_store="upstash")
        summary = pipeline.ingest()
        assert fault.failures == 2
        assert retries(pipeline, summary.run_ids[0], "vector_index") == 0
        assert index_snapshot(pipeline) == clean.v1
        pipeline.close()


@pytest.mark.slow
@pytest.mark.usefixtures("commits_of_eight")
def test_upstash_persistent_errors_mid_upsert_then_a_rerun_converges(
    tmp_path: Path, clean: CleanIndexes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstash has no transactions: the shard's writes (one block) upsert the new chunks, and
    the stale ones are deleted when the block ends. When the upsert of the shard's second
    write keeps failing, the run gives up after the client's and the step's retries; each
    attempt deletes the chunks its first write added (none overwrote a chunk: every chunk's
    text changed) and has deleted nothing, so the index is exactly as before the run, with
    no document absent."""
    source = tmp_path / "source"
    write_v1(source)
    fault = Fault("upstash-persistent", first=10**9)
    with upstash_with_failing_upserts(fault, (500,), clean.dimension, monkeypatch):
        pipeline = open_pipeline(source, tmp_path / "home", vector_store="upstash")
        pipeline.ingest()
        before = state(pipeline)
        assert before.rows == clean.v1

        write_v2(source)
        fault.first, fault.times = fault.calls + 2, None  # the run's second upsert, for ever
        with pytest.raises(IngestFailed, match="vector_index"):
            pipeline.ingest()
        assert state(pipeline) == before

        fault.clear()
        pipeline.ingest()
        assert index_snapshot(pipeline) == clean.v2
        pipeline.close()

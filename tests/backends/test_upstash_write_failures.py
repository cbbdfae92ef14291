"""A write to Upstash Vector that gives up (after the client's retries), against the loopback
double: no document that was there goes missing, the chunks the write added are taken back, and
what cannot be undone is reported so that the next run replaces it."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lorechat_pipeline.core.backends.upstash_client import UpstashUnavailable, UpstashVectorClient
from lorechat_pipeline.core.backends.upstash_index import (
    MIXED_VERSIONS,
    SYSTEM_NAMESPACE,
    UpstashVectorIndex,
)
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.stages.indexing import ArtifactMissing, index_shard
from lorechat_pipeline.core.storage import LocalObjectStore
from tests.backends.conftest import TOKEN, chunk_rows, make_manifest, table, unit_vectors
from tests.backends.upstash_contract_server import ApiError, RunningServer
from tests.pipeline.conftest import store_artifacts
from tests.pipeline.faults import InjectedFault, give_up, in_one_block, writing

ATTEMPTS = 5  # the client fixture's backoff: one request is sent this many times

Stored = dict[str, tuple[list[float], dict[str, Any] | None, str | None]]


@dataclass
class Outage:
    """Calls `first` to `last` (1-based; last None: for ever) of one operation on chunks fail
    with a 500; LoreChat's own records are served."""

    first: int
    last: int | None = None
    calls: int = 0

    def wrap(self, serve: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
        def call(namespace: str, body: Any) -> Any:
            if namespace != SYSTEM_NAMESPACE:
                self.calls += 1
                if self.calls >= self.first and (self.last is None or self.calls <= self.last):
                    raise ApiError(500, "Service error (injected)")
            return serve(namespace, body)

        return call


def fail(
    upstash: RunningServer, monkeypatch: pytest.MonkeyPatch, operation: str, outage: Outage
) -> Outage:
    monkeypatch.setattr(upstash.state, operation, outage.wrap(getattr(upstash.state, operation)))
    return outage


def stored(upstash: RunningServer, index: UpstashVectorIndex) -> Stored:
    records = upstash.state.namespaces.get(index.name, {})
    return {
        vector_id: (record.vector, record.metadata, record.data)
        for vector_id, record in records.items()
    }


def ids_of(rows: list[dict[str, Any]]) -> set[str]:
    return {row["chunk_id"] for row in rows}


BEFORE = (
    chunk_rows("docA", ["a0", "a1", "a2"], unit_vectors(3, seed=1))
    + chunk_rows("docB", ["b0", "b1"], unit_vectors(2, seed=2))
    + chunk_rows("docC", ["c0", "c1"], unit_vectors(2, seed=3))
)
# docA keeps "a0" (its id, now with the new content_fp), docB changes, docD is new, docC goes.
AFTER = (
    chunk_rows("docA", ["a0", "a1 edited"], unit_vectors(2, seed=1), content_fp="fp-2")
    + chunk_rows("docB", ["b0 edited", "b1 edited"], unit_vectors(2, seed=4), content_fp="fp-2")
    + chunk_rows("docD", ["d0", "d1"], unit_vectors(2, seed=5))
)
DOCUMENTS = ["docA", "docB", "docD", "docC"]
CLEAN_VERSIONS = {"docA": "fp-2", "docB": "fp-2", "docD": "fp-1"}


@pytest.fixture
def index(client: UpstashVectorClient) -> UpstashVectorIndex:
    """BEFORE in the index; one request per document (two chunks a request), so that a write
    fails part-way."""
    created = UpstashVectorIndex.open_or_create(client, make_manifest())
    created.replace_documents(table(BEFORE), ["docA", "docB", "docC"])
    return UpstashVectorIndex(
        client, created.name, created.manifest, created.info, max_vectors_per_request=2
    )


def test_an_upsert_that_gives_up_is_undone(
    upstash: RunningServer, index: UpstashVectorIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second request (docB's) fails every attempt, then the service answers again: the
    undo deletes what the first request added and puts back the "a0" it overwrote."""
    before = stored(upstash, index)
    fail(upstash, monkeypatch, "upsert", Outage(first=2, last=1 + ATTEMPTS))

    with pytest.raises(UpstashUnavailable):
        index.replace_documents(table(AFTER), DOCUMENTS)

    assert stored(upstash, index) == before  # ids, vectors, metadata and text


def test_an_upsert_outage_leaves_every_document_present_and_flags_what_it_cannot_undo(
    upstash: RunningServer,
    index: UpstashVectorIndex,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Upserts fail from the second request on, the undo's own upsert too: the chunks added
    are deleted, but "a0" keeps the new metadata. docA's chunks then disagree on content_fp,
    so document_versions reports it as mixed and the next run replaces it."""
    before = stored(upstash, index)
    outage = fail(upstash, monkeypatch, "upsert", Outage(first=2))

    with pytest.raises(UpstashUnavailable):
        index.replace_documents(table(AFTER), DOCUMENTS)

    after = stored(upstash, index)
    assert set(after) == set(before)  # nothing absent, no orphan
    assert {i: (vector, data) for i, (vector, _, data) in after.items()} == {
        i: (vector, data) for i, (vector, _, data) in before.items()
    }
    assert index.document_versions("shard-000") == {
        "docA": MIXED_VERSIONS,
        "docB": "fp-1",
        "docC": "fp-1",
    }
    assert "could not restore the chunks it overwrote" in caplog.text
    assert TOKEN not in caplog.text

    outage.last = outage.calls  # the outage ends; the next run replaces docA, docB, docC, docD
    index.replace_documents(table(AFTER), DOCUMENTS)
    assert set(stored(upstash, index)) == ids_of(AFTER)
    assert index.document_versions("shard-000") == CLEAN_VERSIONS


def test_a_failed_stale_delete_leaves_the_new_chunks_and_the_next_run_removes_the_old(
    upstash: RunningServer, index: UpstashVectorIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = fail(upstash, monkeypatch, "delete", Outage(first=1))

    with pytest.raises(UpstashUnavailable):
        index.replace_documents(table(AFTER), DOCUMENTS)

    after = set(stored(upstash, index))
    assert after == ids_of(AFTER) | ids_of(BEFORE)  # every new chunk is there, no document absent
    # docA and docB hold old and new chunks: reported as mixed, the next run replaces them;
    # docC, removed from the corpus, is still indexed, and the next run deletes it.
    assert index.document_versions("shard-000") == {
        "docA": MIXED_VERSIONS,
        "docB": MIXED_VERSIONS,
        "docC": "fp-1",
        "docD": "fp-1",
    }

    outage.last = outage.calls
    result = index.replace_documents(table(AFTER), DOCUMENTS)
    assert result.deleted == len(ids_of(BEFORE) - ids_of(AFTER))
    assert set(stored(upstash, index)) == ids_of(AFTER)
    assert index.document_versions("shard-000") == CLEAN_VERSIONS


def test_a_write_that_succeeds_counts_what_it_wrote_and_removed(
    upstash: RunningServer, index: UpstashVectorIndex
) -> None:
    result = index.replace_documents(table(AFTER), DOCUMENTS)
    assert (result.written, result.deleted) == (6, 6)  # "a0" overwritten in place
    assert set(stored(upstash, index)) == ids_of(AFTER)
    assert index.document_versions("shard-000") == CLEAN_VERSIONS


# -- several writes as one (all_or_nothing) ---------------------------------------------------


def rows_of(*documents: str) -> list[dict[str, Any]]:
    return [row for row in AFTER if row["document_id"] in documents]


# AFTER in three writes of one request each: docA; docB with docC's removal; docD.
THREE_WRITES = [
    (table(rows_of("docA")), ["docA"]),
    (table(rows_of("docB")), ["docB", "docC"]),
    (table(rows_of("docD")), ["docD"]),
]


def record_deletes(upstash: RunningServer, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The chunk ids every delete by id asks for, from now on."""
    asked: set[str] = set()
    serve = upstash.state.delete

    def delete(namespace: str, body: Any) -> Any:
        if namespace != SYSTEM_NAMESPACE:
            asked.update(body if isinstance(body, list) else body.get("ids") or ())
        return serve(namespace, body)

    monkeypatch.setattr(upstash.state, "delete", delete)
    return asked


def test_a_block_whose_third_write_gives_up_is_undone_without_deleting_a_chunk_it_found(
    upstash: RunningServer, index: UpstashVectorIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third write's request fails every attempt, then the service answers again: the
    undo deletes what the first two writes added and puts back the "a0" the first overwrote.
    Stale chunks go only when the block ends, so none of what was there was ever deleted."""
    before = stored(upstash, index)
    fail(upstash, monkeypatch, "upsert", Outage(first=3, last=2 + ATTEMPTS))
    deleted = record_deletes(upstash, monkeypatch)

    with pytest.raises(UpstashUnavailable):
        in_one_block(index, *(writing(index, write) for write in THREE_WRITES))

    assert stored(upstash, index) == before  # ids, vectors, metadata and text
    assert deleted == ids_of(AFTER) - ids_of(BEFORE)  # only what the block added


def test_a_failure_between_the_writes_of_a_block_undoes_them(
    upstash: RunningServer, index: UpstashVectorIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = stored(upstash, index)
    deleted = record_deletes(upstash, monkeypatch)
    first, second, _ = THREE_WRITES

    with pytest.raises(InjectedFault):
        in_one_block(index, writing(index, first), writing(index, second), give_up)

    assert stored(upstash, index) == before
    assert not deleted & ids_of(BEFORE)


def test_a_block_deletes_the_stale_chunks_when_it_ends(
    upstash: RunningServer, index: UpstashVectorIndex
) -> None:
    results = []
    with index.all_or_nothing():
        for write in THREE_WRITES:
            results.append(index.replace_documents(*write))
        # Every document present, old and new chunks together until the block ends.
        assert set(stored(upstash, index)) == ids_of(BEFORE) | ids_of(AFTER)

    assert set(stored(upstash, index)) == ids_of(AFTER)
    assert index.document_versions("shard-000") == CLEAN_VERSIONS
    assert sum(result.deleted for result in results) == len(ids_of(BEFORE) - ids_of(AFTER))


@pytest.mark.parametrize("failure", ["upsert", "missing artifact"])
def test_a_shard_whose_second_write_fails_leaves_the_index_unchanged(
    tmp_path: Path,
    upstash: RunningServer,
    index: UpstashVectorIndex,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """The indexing stage writes the shard's changes two documents at a time (docA and docB
    with docC's removal, then docD); the second write fails, its upsert or the stage reading
    its rows: the first is undone too. Once the fault is gone, the next run converges."""
    before = stored(upstash, index)
    processed = LocalObjectStore(tmp_path / "processed")
    layout = ProcessedLayout(chunker_version="chunker-1", embedder_version="emb-1")
    ledger = store_artifacts(processed, layout, table(AFTER))
    monkeypatch.setattr("lorechat_pipeline.core.stages.indexing.DOCUMENTS_PER_COMMIT", 2)
    if failure == "upsert":
        fail(upstash, monkeypatch, "upsert", Outage(first=3, last=2 + ATTEMPTS))
    else:
        missing = layout.embeddings("shard-000", "docD", "fp-1")
        saved = processed.read(missing)
        processed.delete([missing])

    def run() -> None:
        index_shard(processed, index, "shard-000", embedding_ledger=ledger, layout=layout)

    with pytest.raises(UpstashUnavailable if failure == "upsert" else ArtifactMissing):
        run()
    assert stored(upstash, index) == before

    if failure == "missing artifact":
        processed.write(missing, saved)
    run()
    assert set(stored(upstash, index)) == ids_of(AFTER)
    assert index.document_versions("shard-000") == CLEAN_VERSIONS

"""A write to Upstash Vector that gives up (after the client's retries), against the loopback
double: no document that was there goes missing, the chunks the write added are taken back, and
what cannot be undone is reported so that the next run replaces it."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lorechat_pipeline.core.backends.upstash_client import UpstashUnavailable, UpstashVectorClient
from lorechat_pipeline.core.backends.upstash_index import (
    MIXED_VERSIONS,
    SYSTEM_NAMESPACE,
    UpstashVectorIndex,
)
from tests.backends.conftest import TOKEN, chunk_rows, make_manifest, table, unit_vectors
from tests.backends.upstash_contract_server import ApiError, RunningServer

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

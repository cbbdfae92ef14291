"""The in-memory copy of the served version: the same ranking as exact search, used only while it
matches the version being served, and never wrong while it catches up."""

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.storage import LocalObjectStore
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from serving.index import IndexReader
from serving.resident import ResidentIndex, ResidentVectors
from serving.settings import ServingSettings
from tests.serving.conftest import BuiltIndex, RunningServer, ServerFactory


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def rows_for(count: int, collections: list[str]) -> pa.Table:
    return pa.table(
        {
            "chunk_id": [f"chunk-{n:06d}" for n in range(count)],
            "collection": [collections[n % len(collections)] for n in range(count)],
        }
    )


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray | None = None):
    scores = unit(vectors) @ unit(query)
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return [int(row) for row in np.lexsort((np.arange(len(scores)), -scores))[:k]]


def test_small_versions_are_searched_exactly_with_collection_scopes() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    resident = ResidentVectors(("table", 1), vectors, rows_for(500, ["a", "b", "c"]))
    collections = np.array(["a", "b", "c"] * 167)[:500]
    for query in rng.normal(size=(20, 32)).astype(np.float32):
        found = resident.search(query, 10)
        assert found is not None
        assert [hit.row for hit in found] == exact_top(vectors, query, 10)
        expected_scores = unit(vectors)[[hit.row for hit in found]] @ unit(query)
        np.testing.assert_allclose([hit.score for hit in found], expected_scores, rtol=1e-5)
        scoped = resident.search(query, 10, ["b", "unknown"])
        assert scoped is not None
        assert [hit.row for hit in scoped] == exact_top(vectors, query, 10, collections == "b")
    rows = resident.result_rows(found)
    assert [row["chunk_id"] for row in rows] == [f"chunk-{hit.row:06d}" for hit in found]
    # A scope the copy cannot fill is handed back to the vector store, never answered short.
    assert resident.search(vectors[0], 5, ["nobody"]) is None


def test_large_versions_are_searched_by_inverted_file_with_high_recall() -> None:
    rng = np.random.default_rng(2)
    centres = unit(rng.normal(size=(300, 64)))
    members = rng.integers(0, len(centres), 30_000)
    vectors = unit(centres[members] + rng.normal(0, 0.08, (30_000, 64)))
    resident = ResidentVectors(("table", 1), vectors, rows_for(30_000, ["a"]), exact_rows=1_000)
    assert resident.centroids is not None
    assert resident.probes < len(resident.centroids) / 8  # it really searches a part
    recalls = []
    for query in unit(centres[:50] + rng.normal(0, 0.08, (50, 64))):
        found = resident.search(query, 10)
        assert found is not None
        assert [hit.score for hit in found] == sorted((hit.score for hit in found), reverse=True)
        # Row numbers are the copy's own (sorted by list): compare by chunk id.
        ours = {int(row["chunk_id"].split("-")[1]) for row in resident.result_rows(found)}
        recalls.append(len(ours & set(exact_top(vectors, query, 10))) / 10)
    assert np.mean(recalls) >= 0.95
    # The rows moved with their vectors when sorted by list.
    best = found[0]
    chunk = resident.result_rows([best])[0]["chunk_id"]
    assert float(unit(vectors)[int(chunk.split("-")[1])] @ query) == pytest.approx(best.score)


def test_a_version_over_the_budget_is_left_to_the_vector_store(built_index: BuiltIndex) -> None:
    pipeline = built_index.pipeline()
    index = pipeline.open_current_index()
    assert isinstance(index, LanceVectorIndex)
    refused = ResidentIndex(budget_bytes=1024, columns=["chunk_id", "collection"])
    refused.track(index)
    assert not refused.wait_until_built(2)
    kept = ResidentIndex(budget_bytes=2**30, columns=["chunk_id", "collection"])
    kept.track(index)
    assert kept.wait_until_built(60)
    copy = kept.current()
    assert copy is not None
    assert copy.size == index.count()
    pipeline.close()


def wait_for_copy(server: RunningServer, rows: int) -> None:
    deadline = time.monotonic() + 60
    with server.client() as client:
        while client.get("/v1/index").json()["resident_rows"] != rows:
            assert time.monotonic() < deadline, "the in-memory copy was never built"
            time.sleep(0.1)


QUERIES = ["how do I bleed a radiator", "boiler pressure", "green tea", "solar panels", "bikes"]


def searches_answered_by(server: RunningServer) -> dict[str, float]:
    with server.client() as client:
        metrics = client.get("/metrics").text
    return {
        where: float(line.rsplit(" ", 1)[1])
        for where in ("memory", "vector_store")
        for line in metrics.splitlines()
        if line.startswith(f'lorechat_searches_total{{answered_by="{where}"}}')
    }


def test_the_copy_answers_as_lancedb_does(serve: ServerFactory, built_index: BuiltIndex) -> None:
    # The alias read once a minute: searches need no I/O, and the copy answers on the loop.
    with_copy = serve(alias_check_seconds=60)
    without_copy = serve(resident_vectors_mb=0)
    chunks = built_index.pipeline().open_current_index().count()
    wait_for_copy(with_copy, chunks)
    with without_copy.client() as client:
        assert client.get("/v1/index").json()["resident_rows"] == 0
    with with_copy.client() as fast, without_copy.client() as plain:
        for query in QUERIES:
            for body in (
                {"query": query, "k": 5, "mode": "dense"},
                {"query": query, "k": 5, "mode": "dense", "collection": "energy"},
                {"query": query, "k": 5, "mode": "hybrid"},
            ):
                ours, theirs = (
                    fast.post("/v1/search", json=body),
                    plain.post("/v1/search", json=body),
                )
                assert ours.status_code == theirs.status_code == 200
                got, expected = ours.json()["hits"], theirs.json()["hits"]
                assert [hit["chunk_id"] for hit in got] == [hit["chunk_id"] for hit in expected]
                assert [hit["score"] for hit in got] == pytest.approx(
                    [hit["score"] for hit in expected], abs=1e-4
                )
                assert got[0]["citation"] == expected[0]["citation"]
    answered = searches_answered_by(with_copy)
    # Each unscoped search from memory; a scope whose rows the probed lists cannot fill goes
    # to LanceDB (with the vector already made).
    assert answered.get("memory", 0) >= 2 * len(QUERIES)
    assert answered.get("memory", 0) + answered.get("vector_store", 0) == 3 * len(QUERIES)
    assert searches_answered_by(without_copy) == {"vector_store": 3 * len(QUERIES)}


def test_rows_written_to_the_served_version_are_found_at_once(
    serve: ServerFactory, built_index: BuiltIndex, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(built_index.home, home)
    server = serve(home=home)
    pipeline = BuiltIndex(home, built_index.source).pipeline()
    index = pipeline.open_current_index()
    assert isinstance(index, LanceVectorIndex)
    chunks = index.count()
    wait_for_copy(server, chunks)
    # An incremental update lands in the version being served: a chunk about something new.
    row = index.table.search().limit(1).to_arrow()
    text = "The lighthouse keeper winds the clockwork lamp at dusk."
    vector = pipeline.embedder.embed_documents([text])[0]
    row = row.set_column(row.schema.get_field_index("chunk_id"), "chunk_id", [["lighthouse#1"]])
    row = row.set_column(row.schema.get_field_index("text"), "text", [[text]])
    row = row.set_column(
        row.schema.get_field_index("vector"),
        "vector",
        pa.array([vector.tolist()], type=row.schema.field("vector").type),
    )
    index.table.add(row)
    with server.client() as client:
        body = {"query": "who winds the lighthouse lamp", "k": 1, "mode": "dense"}
        # Found straight away: from LanceDB until the copy has caught up, then from the copy.
        assert client.post("/v1/search", json=body).json()["hits"][0]["chunk_id"] == "lighthouse#1"
        wait_for_copy(server, chunks + 1)
        assert client.post("/v1/search", json=body).json()["hits"][0]["chunk_id"] == "lighthouse#1"
    pipeline.close()


def promote_a_copy(reader: IndexReader) -> str:
    """Promote a byte-for-byte copy of the served table as a new version; its name."""
    served = reader.current().table
    shutil.copytree(Path(reader.uri) / f"{served}.lance", Path(reader.uri) / f"{served}_next.lance")
    AliasStore(LocalObjectStore(reader.uri)).promote(f"{served}_next", reason="test")
    return f"{served}_next"


@pytest.mark.parametrize("warm_up_bound", [30.0, 0.3])
def test_a_promotion_is_served_once_its_copy_is_built(
    built_index: BuiltIndex, embedder: Any, tmp_path: Path, warm_up_bound: float
) -> None:
    home = tmp_path / "home"
    shutil.copytree(built_index.home, home)
    settings = ServingSettings(
        home=home, alias_check_seconds=0, switch_warm_up_seconds=warm_up_bound
    )
    reader = IndexReader(settings, embedder, ["chunk_id", "collection"])
    try:
        old = reader.open_initial()
        assert reader.resident.wait_until_built(60)
        # Hold the next copy's build, as a large version's takes seconds.
        release = threading.Event()
        build = reader.resident._build

        def held_build(*args: Any) -> None:
            release.wait(60)
            build(*args)

        reader.resident._build = held_build  # type: ignore[method-assign,assignment]
        new = promote_a_copy(reader)
        promoted_at = time.monotonic()
        if warm_up_bound < 1:
            # Bounded: past the bound the new version is served, by LanceDB until its copy is.
            while (served := reader.current()).table != new:
                assert time.monotonic() - promoted_at < warm_up_bound + 10
                time.sleep(0.02)
            assert time.monotonic() - promoted_at >= warm_up_bound
            assert reader.resident_copy(served) is None
        else:
            # Meanwhile the previous version answers, still from its in-memory copy.
            time.sleep(0.5)
            served = reader.current()
            assert served.table == old.table
            assert reader.resident_copy(served) is not None
        release.set()
        deadline = time.monotonic() + 60
        while reader.resident_copy(served := reader.current()) is None or served.table != new:
            assert time.monotonic() < deadline, "the promoted version never got its copy"
            time.sleep(0.02)
        copy = reader.resident_copy(served)
        assert copy is not None
        assert copy.size == served.index.count()
    finally:
        reader.close()

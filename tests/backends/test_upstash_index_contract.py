"""Contract tests of UpstashVectorIndex (the LanceVectorIndex interface on Upstash Vector) against
the loopback double: prefix deletion on change and removal, namespace promotion, batch limits,
quarantine of what Upstash cannot hold, the manifest stored with the index, filters, hybrid."""

import json

import numpy as np
import pytest

from lorechat_pipeline.core.backends.upstash_client import UpstashCredentials, UpstashVectorClient
from lorechat_pipeline.core.backends.upstash_index import (
    MANIFEST_PREFIX,
    SYSTEM_NAMESPACE,
    KeywordSearchUnavailable,
    UpstashVectorIndex,
    upstash_aliases,
)
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.manifest import ManifestMismatch
from lorechat_pipeline.core.vector_index import IndexNotFound, sql_in, sql_string
from serving.search import filter_sql
from tests.backends.conftest import (
    DIMENSION,
    TOKEN,
    chunk_rows,
    fast_backoff,
    make_manifest,
    table,
    unit_vectors,
)
from tests.backends.upstash_contract_server import RunningServer, upstash_contract_server


def test_a_changed_document_gets_its_new_chunks_then_loses_its_stale_ones(
    upstash: RunningServer, client: UpstashVectorClient
) -> None:
    index = UpstashVectorIndex.open_or_create(client, make_manifest())
    assert isinstance(index, VectorIndex)
    first = chunk_rows("docA", ["a0", "a1", "a2"], unit_vectors(3, seed=1))
    first += chunk_rows("docB", ["b0", "b1"], unit_vectors(2, seed=2), shard="shard-001")
    result = index.replace_documents(table(first), ["docA", "docB"])
    assert (result.written, result.deleted, result.quarantined) == (5, 0, ())
    assert index.count() == 5
    assert index.document_versions("shard-000") == {"docA": "fp-1"}

    upstash.state.requests.clear()
    changed = chunk_rows("docA", ["a0", "a1 edited"], unit_vectors(2, seed=3), content_fp="fp-2")
    result = index.replace_documents(table(changed), ["docA"])
    # "a0" keeps its content-addressed id: overwritten in place, not deleted (as LanceDB counts).
    assert (result.written, result.deleted) == (2, 2)
    calls = [(path, body) for _, path, body in upstash.state.requests if "info" not in path]
    assert [path for path, _ in calls] == [
        f"/range/{index.name}",
        f"/upsert/{index.name}",
        f"/delete/{index.name}",
    ]
    assert calls[0][1]["prefix"] == "docA#"
    assert [v["id"] for v in calls[1][1]] == [r["chunk_id"] for r in changed]
    assert calls[2][1] == {"ids": [r["chunk_id"] for r in first[1:3]]}  # never absent
    stored = index.rows(f"document_id = {sql_string('docA')}", ["chunk_id", "text", "content_fp"])
    assert stored.to_pylist() == [
        {"chunk_id": r["chunk_id"], "text": r["text"], "content_fp": "fp-2"} for r in changed
    ]
    assert index.document_versions("shard-000") == {"docA": "fp-2"}
    assert index.count(f"shard = {sql_string('shard-001')}") == 2
    # A predicate that pins documents ranges over their id prefixes only.
    upstash.state.requests.clear()
    assert index.count(sql_in("document_id", ["docB", "nope"]) + " AND ordinal = 1") == 1
    ranged = [body["prefix"] for _, path, body in upstash.state.requests if "range" in path]
    assert ranged == ["docB#", "nope#"]

    # Removal: a document in document_ids but absent from rows leaves the index.
    empty = table([])
    result = index.replace_documents(empty, ["docB"])
    assert (result.written, result.deleted) == (0, 2)
    assert index.document_versions("shard-001") == {}
    assert index.count() == 2


def test_rows_search_and_filters(client: UpstashVectorClient) -> None:
    index = UpstashVectorIndex.open_or_create(client, make_manifest())
    vectors = unit_vectors(6, seed=5)
    rows = chunk_rows("docA", ["a0", "a1", "a2"], vectors[:3], collection="handbook")
    rows += chunk_rows("docB", ["b0", "b1", "b2"], vectors[3:], collection="it's-legal")
    index.replace_documents(table(rows), ["docA", "docB"])

    got = index.rows(None, ["chunk_id", "ordinal", "page_number", "element_types", "vector"])
    assert got.num_rows == 6
    assert got.schema.field("vector").type.list_size == DIMENSION
    by_id = {row["chunk_id"]: row for row in got.to_pylist()}
    for row in rows:
        assert np.allclose(by_id[row["chunk_id"]]["vector"], row["vector"], atol=1e-6)
        assert by_id[row["chunk_id"]]["element_types"] == ["NarrativeText"]

    hits = index.search(vectors[4], k=3)
    expected = np.argsort(-(vectors @ vectors[4]))[:3]
    assert [hit.chunk_id for hit in hits] == [rows[i]["chunk_id"] for i in expected]
    assert [hit.score for hit in hits] == pytest.approx(
        [float(vectors[i] @ vectors[4]) for i in expected], abs=1e-5
    )  # cosines, as LanceDB reports them
    assert hits[0].text == "b1"
    assert hits[0].row["section"] is None

    scoped = filter_sql({"page_number": {"gte": 2}}, ["it's-legal"])
    hits = index.search(vectors[0], k=10, where=scoped)
    assert sorted(hit.row["text"] for hit in hits) == ["b1", "b2"]
    assert index.search(vectors[0], k=10, where=filter_sql(None, [])) == []  # FALSE: no call
    assert index.count(sql_in("document", ["handbook/docA.md"])) == 3


def test_batches_stop_at_1000_vectors(upstash: RunningServer, client: UpstashVectorClient) -> None:
    index = UpstashVectorIndex.open_or_create(client, make_manifest())
    rows = []
    for number in range(5):  # 5 documents of 500 chunks
        texts = [f"chunk {number}-{i}" for i in range(500)]
        rows += chunk_rows(f"doc{number}", texts, unit_vectors(500, seed=number))
    upstash.state.requests.clear()
    result = index.replace_documents(table(rows), [f"doc{n}" for n in range(5)])
    assert result.written == 2500
    sizes = [len(body) for _, path, body in upstash.state.requests if path.startswith("/upsert")]
    assert max(sizes) <= 1000
    assert sum(sizes) == 2500
    assert index.count() == 2500

    small = UpstashVectorIndex(
        client, index.name, index.manifest, index.info, max_request_bytes=20_000
    )
    upstash.state.requests.clear()
    small.replace_documents(table(rows[:100]), ["doc0"])
    sizes = [len(body) for _, path, body in upstash.state.requests if path.startswith("/upsert")]
    assert len(sizes) > 1  # a byte budget splits batches too
    assert sum(sizes) == 100

    # A service that finds a body too large (413) gets it again in halves.
    upstash.state.max_body_bytes = 60_000
    upstash.state.requests.clear()
    result = index.replace_documents(table(rows[:500]), ["doc0"])
    assert result.written == 500
    accepted = [
        len(body)
        for _, path, body in upstash.state.requests
        if path.startswith("/upsert") and len(json.dumps(body, separators=(",", ":"))) <= 60_000
    ]
    assert sum(accepted) == 500
    assert index.count(f"document_id = {sql_string('doc0')}") == 500


def test_oversized_chunks_are_quarantined_not_failed(client: UpstashVectorClient) -> None:
    index = UpstashVectorIndex.open_or_create(client, make_manifest())
    rows = chunk_rows("doc", ["fine", "big metadata", "big text"], unit_vectors(3))
    rows[1]["user_metadata"] = '{"notes": "' + "x" * 50_000 + '"}'
    rows[2]["text"] = "y" * (1024 * 1024 + 1)
    result = index.replace_documents(table(rows), ["doc"])
    assert result.written == 1
    reasons = {q.chunk_id: q.reason for q in result.quarantined}
    assert set(reasons) == {rows[1]["chunk_id"], rows[2]["chunk_id"]}
    assert "metadata is" in reasons[rows[1]["chunk_id"]]
    assert "49152" in reasons[rows[1]["chunk_id"]]
    assert "text is" in reasons[rows[2]["chunk_id"]]
    assert [q.document_id for q in result.quarantined] == ["doc", "doc"]
    assert index.rows(None, ["chunk_id"]).column("chunk_id").to_pylist() == [rows[0]["chunk_id"]]


def test_blue_green_promotion_switches_namespaces(
    upstash: RunningServer, client: UpstashVectorClient
) -> None:
    aliases = upstash_aliases(client)
    blue = UpstashVectorIndex.open_or_create(client, make_manifest(chunker_version="c1"))
    blue.replace_documents(table(chunk_rows("doc", ["old"], unit_vectors(1))), ["doc"])
    aliases.promote(blue.name, reason="first version")

    green = UpstashVectorIndex.open_or_create(client, make_manifest(chunker_version="c2"))
    assert green.name != blue.name
    green.replace_documents(table(chunk_rows("doc", ["new", "er"], unit_vectors(2))), ["doc"])
    assert aliases.current_table() == blue.name  # readers still on blue while green fills
    alias = aliases.promote(green.name, reason="re-chunked")
    assert aliases.current_table() == green.name
    assert [v.table for v in alias.retired] == [blue.name]

    current = UpstashVectorIndex.open(client, aliases.current_table() or "")
    assert current.count() == 2
    old = UpstashVectorIndex.open(client, blue.name)  # retired but readable until dropped
    assert old.rows(None, ["text"]).column("text").to_pylist() == ["old"]
    assert sorted(UpstashVectorIndex.table_names(client)) == sorted([blue.name, green.name])

    UpstashVectorIndex.drop(client, blue.name)
    aliases.forget([blue.name])
    assert blue.name not in client.list_namespaces()
    assert UpstashVectorIndex.table_names(client) == [green.name]
    with pytest.raises(IndexNotFound):
        UpstashVectorIndex.open(client, blue.name)
    assert UpstashVectorIndex.open(client, green.name).count() == 2
    current_alias = aliases.read()
    assert current_alias is not None
    assert current_alias.retired == ()
    # The alias and the manifests live in the reserved namespace, never among the versions.
    assert set(upstash.state.namespaces[SYSTEM_NAMESPACE]) == {
        MANIFEST_PREFIX + green.name,
        "object/_lorechat/alias.json",
    }


def test_the_manifest_travels_with_the_index(client: UpstashVectorClient) -> None:
    manifest = make_manifest()
    index = UpstashVectorIndex.open_or_create(client, manifest)
    assert UpstashVectorIndex.open(client, index.name).manifest == manifest
    other_chunker = make_manifest(chunker_version="c9")
    with pytest.raises(ManifestMismatch, match="chunker_version"):
        UpstashVectorIndex.open_or_create(client, other_chunker, namespace=index.name)
    UpstashVectorIndex.open(client, index.name, expected_embedder=other_chunker)  # reading: fine
    with pytest.raises(ManifestMismatch, match="holds vectors of"):
        UpstashVectorIndex.open(
            client, index.name, expected_embedder=make_manifest(dimension=DIMENSION * 2)
        )
    with pytest.raises(ManifestMismatch, match="holds 8-d vectors"):
        UpstashVectorIndex.open_or_create(client, make_manifest(dimension=16))
    with pytest.raises(ValueError, match="reserved"):
        UpstashVectorIndex.open_or_create(client, manifest, namespace=SYSTEM_NAMESPACE)


@pytest.mark.parametrize("strict", [False, True], ids=["missing-reads-empty", "missing-is-404"])
def test_an_empty_version_reads_as_empty(strict: bool) -> None:
    with (
        upstash_contract_server(
            token=TOKEN, dimension=DIMENSION, strict_namespaces=strict
        ) as server,
        UpstashVectorClient(UpstashCredentials(server.url, TOKEN), backoff=fast_backoff()) as c,
    ):
        assert UpstashVectorIndex.table_names(c) == []  # not even the reserved namespace yet
        assert upstash_aliases(c).read() is None
        index = UpstashVectorIndex.open_or_create(c, make_manifest())
        assert index.name not in c.list_namespaces()  # Upstash creates it on first upsert
        assert index.count() == 0
        assert index.count("shard = 'shard-000'") == 0
        assert index.count("document_id = 'doc'") == 0
        assert index.document_versions("shard-000") == {}
        assert index.search(unit_vectors(1)[0], k=3) == []
        assert index.rows(None, ["chunk_id"]).num_rows == 0
        assert index.maintain(ann_index_min_rows=1) == []
        assert UpstashVectorIndex.table_names(c) == [index.name]
        rows = chunk_rows("doc", ["first words"], unit_vectors(1))
        assert index.replace_documents(table(rows), ["doc"]).written == 1
        assert index.count("document_id = 'doc'") == 1


def test_keyword_and_hybrid_search_need_a_hybrid_index(client: UpstashVectorClient) -> None:
    dense = UpstashVectorIndex.open_or_create(client, make_manifest())
    with pytest.raises(KeywordSearchUnavailable, match="need a hybrid index"):
        dense.keyword_search("tea", k=3)
    with pytest.raises(KeywordSearchUnavailable):
        dense.hybrid_search(unit_vectors(1)[0], "tea", k=3)

    with (
        upstash_contract_server(token=TOKEN, dimension=DIMENSION, hybrid=True) as server,
        UpstashVectorClient(UpstashCredentials(server.url, TOKEN), backoff=fast_backoff()) as hc,
    ):
        index = UpstashVectorIndex.open_or_create(hc, make_manifest())
        assert index.is_hybrid
        texts = ["green tea brewing", "bicycle tyre repair", "solar panel cleaning"]
        vectors = unit_vectors(3, seed=9)
        rows = chunk_rows("doc", texts, vectors)
        index.replace_documents(table(rows), ["doc"])
        upserted = next(body for _, path, body in server.state.requests if "upsert/chunks" in path)
        assert all("sparseVector" in vector for vector in upserted)
        assert [hit.text for hit in index.keyword_search("tyre repair", k=3)] == [texts[1]]
        fused = index.hybrid_search(vectors[2], "tyre", k=3)
        assert {hit.text for hit in fused[:2]} == {texts[1], texts[2]}
        assert index.search(vectors[0], k=1)[0].text == texts[0]

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lorechat_pipeline.core.ids import chunk_id, document_id
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.manifest import IndexManifest, ManifestMismatch
from lorechat_pipeline.core.records import index_schema
from lorechat_pipeline.core.stages.indexing import ArtifactMissing, index_shard
from lorechat_pipeline.core.storage import LocalObjectStore
from lorechat_pipeline.core.vector_index import IndexNotFound, LanceVectorIndex, sql_in, sql_string
from tests.pipeline.conftest import store_artifacts
from tests.pipeline.faults import (
    FailingLanceTable,
    Fault,
    InjectedFault,
    give_up,
    in_one_block,
    writing,
)

MANIFEST = IndexManifest(
    embedding_model="test/model",
    embedding_dimension=4,
    metric="cosine",
    normalized=True,
    chunker_version="c1",
    chunker_description="test chunker",
)


def rows(document: str, texts: list[str], shard: str = "shard-000") -> pa.Table:
    doc_id = document_id(document)
    vectors = [np.eye(4, dtype=np.float32)[i % 4] for i in range(len(texts))]
    return pa.Table.from_pylist(
        [
            {
                "chunk_id": chunk_id(doc_id, i, text),
                "document_id": doc_id,
                "document": document,
                "collection": "default",
                "shard": shard,
                "source_version": "v1",
                "content_hash": "h",
                "content_fp": f"fp-{hash(tuple(texts)) & 0xFFFF}",
                "content_type": "md",
                "ordinal": i,
                "text": text,
                "title": None,
                "page_number": None,
                "section": None,
                "element_types": ["NarrativeText"],
                "user_metadata": None,
                "chunker_version": "c1",
                "embedding_model": "test/model",
                "vector": vector.tolist(),
            }
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
        ],
        schema=index_schema(4),
    )


def test_replace_is_exact_per_document(tmp_path: Path) -> None:
    index = LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST)
    a, b = document_id("a.md"), document_id("b.md")
    index.replace_documents(
        pa.concat_tables([rows("a.md", ["x", "y", "z"]), rows("b.md", ["q"])]), [a, b]
    )
    assert index.count() == 4
    result = index.replace_documents(rows("a.md", ["x2"]), [a])
    assert (result.written, result.deleted) == (1, 3)
    assert sorted(index.rows(None, ["text"]).column("text").to_pylist()) == ["q", "x2"]
    again = index.replace_documents(rows("a.md", ["x2"]), [a])  # idempotent
    assert index.count() == 2
    assert again.deleted == 0
    index.replace_documents(index_schema(4).empty_table(), [b])  # deletion
    assert index.rows(None, ["document"]).column("document").to_pylist() == ["a.md"]
    assert index.document_versions("shard-000") == {
        a: rows("a.md", ["x2"])["content_fp"][0].as_py()
    }


def test_manifest_travels_with_the_table_and_mismatches_are_refused(tmp_path: Path) -> None:
    LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST, "chunks")
    reopened = LanceVectorIndex.open(str(tmp_path), "chunks")
    assert reopened.manifest == MANIFEST
    other = IndexManifest(**{**MANIFEST.__dict__, "embedding_model": "other/model"})
    with pytest.raises(ManifestMismatch, match="embedding_model"):
        LanceVectorIndex.open_or_create(str(tmp_path), other, "chunks")
    with pytest.raises(ManifestMismatch, match="other/model"):
        LanceVectorIndex.open(str(tmp_path), "chunks", expected=other)
    with pytest.raises(IndexNotFound, match="lorechat ingest"):
        LanceVectorIndex.open(str(tmp_path), "missing")


def test_default_table_name_follows_model_and_chunker() -> None:
    name = MANIFEST.default_table_name()
    assert name.startswith("chunks_model_")
    assert name == MANIFEST.default_table_name()
    rechunked = IndexManifest(**{**MANIFEST.__dict__, "chunker_version": "c2"})
    assert rechunked.default_table_name() != name


def test_search_and_maintenance(tmp_path: Path) -> None:
    index = LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST)
    index.replace_documents(
        rows("a.md", ["alpha", "beta", "gamma", "delta"]), [document_id("a.md")]
    )
    hits = index.search(np.array([0, 1, 0, 0], dtype=np.float32), k=2)
    assert hits[0].text == "beta"
    assert hits[0].score == pytest.approx(1.0)
    assert hits[0].document == "a.md"
    done = index.maintain(ann_index_min_rows=1_000_000)
    assert "fts(text)" in done
    assert "btree(document_id)" in done
    assert index.maintain(ann_index_min_rows=1_000_000) == []  # already in place
    filtered = index.search(np.array([0, 1, 0, 0], dtype=np.float32), k=5, where="ordinal >= 2")
    assert {hit.text for hit in filtered} == {"gamma", "delta"}


def test_rows_left_unfolded_stay_searchable_until_a_fold(tmp_path: Path) -> None:
    from serving.search import keyword

    index = LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST)
    index.replace_documents(rows("a.md", ["alpha", "beta"]), [document_id("a.md")])
    built = index.maintain(ann_index_min_rows=1_000_000, fold=False)
    assert "fts(text)" in built  # missing indexes are built, folding or not
    assert not index.has_unfolded_rows()
    index.replace_documents(
        rows("b.md", ["gamma", "delta", "epsilon", "xylophone"]), [document_id("b.md")]
    )
    assert index.maintain(ann_index_min_rows=1_000_000, fold=False) == []
    assert index.has_unfolded_rows()
    # Scanned beside the indexes: the new rows are found by every kind of search.
    assert [hit.row["text"] for hit in keyword(index, "xylophone", 5, None)] == ["xylophone"]
    vector_hits = index.search(np.array([0, 0, 0, 1], dtype=np.float32), k=1)
    assert vector_hits[0].text == "xylophone"
    assert index.count(f"document_id = {sql_string(document_id('b.md'))}") == 4
    index.maintain(ann_index_min_rows=1_000_000)
    assert not index.has_unfolded_rows()
    assert [hit.row["text"] for hit in keyword(index, "xylophone", 5, None)] == ["xylophone"]


def test_sql_literals_quote_safely() -> None:
    assert sql_string("it's") == "'it''s'"
    assert sql_in("document_id", ["a", "b'c"]) == "document_id IN ('a', 'b''c')"


def test_ann_index_is_built_once_the_table_is_large_enough(tmp_path: Path) -> None:
    index = LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST)
    rng = np.random.default_rng(7)
    texts = [f"chunk {i}" for i in range(400)]
    table = rows("big.md", texts)
    vectors = rng.normal(size=(400, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = table.set_column(
        table.schema.get_field_index("vector"),
        "vector",
        pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 4),
    )
    index.replace_documents(table, [document_id("big.md")])
    assert "ivf_flat(vector)" not in index.maintain(ann_index_min_rows=1000)
    assert "ivf_flat(vector)" in index.maintain(ann_index_min_rows=256)
    assert any(i.name == "vector_idx" for i in index.table.list_indices())
    hits = index.search(vectors[42], k=1)
    assert hits[0].text == "chunk 42"


def test_full_text_index_analysed_otherwise_is_rebuilt(tmp_path: Path) -> None:
    index = LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST)
    index.replace_documents(rows("a.md", ["running late", "ran"]), [document_id("a.md")])
    index.table.create_fts_index("text", replace=True, stem=False)  # analysed otherwise
    assert "fts(text)" in index.maintain(ann_index_min_rows=1_000_000)
    text_index = next(i for i in index.table.list_indices() if i.name == "text_idx")
    assert text_index.index_details["stem"]
    assert index.maintain(ann_index_min_rows=1_000_000) == []


# -- a write that gives up --------------------------------------------------------------------

BEFORE = {f"{name}.md": [f"{name} one", f"{name} two"] for name in "abcdef"}


def every_row(index: LanceVectorIndex) -> list[dict[str, Any]]:
    return sorted(index.table.to_arrow().to_pylist(), key=lambda row: row["chunk_id"])


def indexed(tmp_path: Path) -> LanceVectorIndex:
    index = LanceVectorIndex.open_or_create(str(tmp_path), MANIFEST)
    index.replace_documents(
        pa.concat_tables([rows(name, texts) for name, texts in BEFORE.items()]),
        [document_id(name) for name in BEFORE],
    )
    return index


def changes() -> tuple[pa.Table, list[str]]:
    """Four documents changed, one added, one removed: three commits of two documents."""
    changed = {name: [f"{texts[0]}, edited", texts[1]] for name, texts in BEFORE.items()}
    new = {name: changed[name] for name in ("a.md", "b.md", "c.md", "d.md")} | {"g.md": ["g"]}
    table = pa.concat_tables([rows(name, texts) for name, texts in new.items()])
    return table, [document_id(name) for name in [*new, "e.md"]]


@pytest.mark.parametrize("failing_commit", [2, 3])
def test_a_write_whose_later_commit_fails_leaves_the_table_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_commit: int
) -> None:
    index = indexed(tmp_path)
    before = every_row(index)
    monkeypatch.setattr("lorechat_pipeline.core.vector_index.DOCUMENTS_PER_COMMIT", 2)
    fault = Fault("lancedb-commit", first=failing_commit, times=None)
    failing = LanceVectorIndex(FailingLanceTable(index.table, fault), index.manifest, index.uri)

    with pytest.raises(InjectedFault):
        failing.replace_documents(*changes())

    assert fault.calls == failing_commit  # the commits before it did go in, and were undone
    assert every_row(index) == before
    reopened = LanceVectorIndex.open(str(tmp_path), index.name)
    assert every_row(reopened) == before  # what a new reader (the serving app) sees

    result = index.replace_documents(*changes())  # the next run, the fault gone
    assert (result.written, result.deleted) == (9, 6)


def test_a_failed_write_is_not_rolled_back_over_another_writers_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    index = indexed(tmp_path)
    monkeypatch.setattr("lorechat_pipeline.core.vector_index.DOCUMENTS_PER_COMMIT", 2)
    other_writer = LanceVectorIndex.open(str(tmp_path), index.name)

    class OtherWriterThenFault(Fault):
        def hit(self) -> None:
            if self.calls + 1 == self.first:
                other_writer.replace_documents(rows("z.md", ["z"]), [document_id("z.md")])
            super().hit()

    fault = OtherWriterThenFault("lancedb-commit", first=2, times=None)
    failing = LanceVectorIndex(FailingLanceTable(index.table, fault), index.manifest, index.uri)
    table, _ = changes()
    with pytest.raises(InjectedFault):
        failing.replace_documents(*changes())

    index.refresh()
    documents = {row["document"]: row for row in every_row(index)}
    assert "z.md" in documents  # the other writer's commit stays
    first_commit = table.filter(pa.compute.is_in(table["document"], pa.array(["a.md", "b.md"])))
    kept = {row["chunk_id"] for row in every_row(index)}
    assert set(first_commit.column("chunk_id").to_pylist()) <= kept  # ours stays with it
    assert "not rolling" in caplog.text


# -- several writes as one (all_or_nothing) ---------------------------------------------------


def three_writes() -> list[tuple[pa.Table, list[str]]]:
    """changes() as three replace_documents calls of two documents each."""
    table, ids = changes()
    return [
        (
            table.filter(pa.compute.is_in(table["document_id"], pa.array(ids[i : i + 2]))),
            ids[i : i + 2],
        )
        for i in range(0, len(ids), 2)
    ]


def chunk_ids(table: pa.Table) -> set[str]:
    return set(table.column("chunk_id").to_pylist())


@pytest.mark.parametrize("failing_commit", [5, 6])
def test_a_block_whose_third_write_fails_leaves_the_table_as_before_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_commit: int
) -> None:
    """Two commits per write: the third write fails at its first commit or at its second."""
    index = indexed(tmp_path)
    before = every_row(index)
    monkeypatch.setattr("lorechat_pipeline.core.vector_index.DOCUMENTS_PER_COMMIT", 1)
    fault = Fault("lancedb-commit", first=failing_commit, times=None)
    failing = LanceVectorIndex(FailingLanceTable(index.table, fault), index.manifest, index.uri)

    with pytest.raises(InjectedFault):
        in_one_block(failing, *(writing(failing, write) for write in three_writes()))

    assert fault.calls == failing_commit  # the commits before it did go in, and were undone
    assert every_row(index) == before
    assert every_row(LanceVectorIndex.open(str(tmp_path), index.name)) == before


def test_a_failure_between_the_writes_of_a_block_undoes_them(tmp_path: Path) -> None:
    index = indexed(tmp_path)
    before = every_row(index)
    first, second, _ = three_writes()

    with pytest.raises(InjectedFault):
        in_one_block(index, writing(index, first), writing(index, second), give_up)

    assert every_row(index) == before


def test_a_block_that_succeeds_equals_one_write(tmp_path: Path) -> None:
    in_one, in_three = indexed(tmp_path / "one"), indexed(tmp_path / "three")
    in_one.replace_documents(*changes())
    in_one_block(in_three, *(writing(in_three, write) for write in three_writes()))
    assert every_row(in_three) == every_row(in_one)


def test_a_failed_block_is_not_rolled_back_over_another_writers_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = indexed(tmp_path)
    other_writer = LanceVectorIndex.open(str(tmp_path), index.name)
    first, second, _ = three_writes()

    with pytest.raises(InjectedFault):
        in_one_block(
            index,
            writing(index, first),
            writing(other_writer, (rows("z.md", ["z"]), [document_id("z.md")])),
            writing(index, second),
            give_up,
        )

    index.refresh()
    kept = {row["chunk_id"] for row in every_row(index)}
    assert chunk_ids(rows("z.md", ["z"])) <= kept  # the other writer's commit stays
    assert chunk_ids(first[0]) | chunk_ids(second[0]) <= kept  # the block's stay with it
    assert "not rolling" in caplog.text


@pytest.mark.parametrize("failure", ["commit", "missing artifact"])
def test_a_shard_whose_second_write_fails_leaves_the_index_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """The indexing stage writes a shard's changes two documents at a time; the second write
    fails (its commit, or the stage reading its rows): the first is undone too."""
    index = indexed(tmp_path / "index")
    before = every_row(index)
    processed = LocalObjectStore(tmp_path / "processed")
    layout = ProcessedLayout(chunker_version="c1", embedder_version="emb-1")
    # The corpus now: changes() (e.md removed), f.md unchanged.
    ledger = store_artifacts(processed, layout, changes()[0])
    ledger |= store_artifacts(processed, layout, rows("f.md", BEFORE["f.md"]))
    monkeypatch.setattr("lorechat_pipeline.core.stages.indexing.DOCUMENTS_PER_COMMIT", 2)
    fault = Fault("lancedb-commit", first=2 if failure == "commit" else 10**9, times=None)
    failing = LanceVectorIndex(FailingLanceTable(index.table, fault), index.manifest, index.uri)
    if failure == "missing artifact":
        replaced = sorted(set(ledger) - {document_id("f.md")})
        entry = ledger[replaced[2]]  # the second write's first document
        processed.delete([layout.embeddings("shard-000", entry.document_id, entry.content_fp)])

    with pytest.raises(InjectedFault if failure == "commit" else ArtifactMissing):
        index_shard(processed, failing, "shard-000", embedding_ledger=ledger, layout=layout)

    assert fault.calls == (2 if failure == "commit" else 1)  # the first write went in
    assert every_row(index) == before

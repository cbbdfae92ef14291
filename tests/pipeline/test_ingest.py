"""The whole graph on the local default: idempotency, changes, deletions, quarantine, recovery."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.core.manifest import ManifestMismatch
from tests.pipeline.conftest import HTML, PipelineFactory, index_snapshot, sha256, write


def rows_by_document(pipeline: Any) -> dict[str, list[dict[str, Any]]]:
    columns = [
        "chunk_id",
        "document",
        "collection",
        "shard",
        "content_hash",
        "source_version",
        "title",
        "element_types",
        "user_metadata",
        "chunker_version",
        "embedding_model",
        "text",
        "ordinal",
    ]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in pipeline.open_index().rows(None, columns).to_pylist():
        grouped.setdefault(row["document"], []).append(row)
    return grouped


def test_first_ingest_indexes_every_document_with_lineage(
    corpus: Path, make_pipeline: PipelineFactory
) -> None:
    pipeline = make_pipeline(corpus)
    summary = pipeline.ingest()
    assert summary.as_json()["documents"] == {
        "new": 3,
        "changed": 0,
        "unchanged": 0,
        "deleted": 0,
        "quarantined": 0,
    }
    grouped = rows_by_document(pipeline)
    assert set(grouped) == {"energy/solar.md", "kitchen/tea.html", "bikes.txt"}
    assert summary.chunks_written == sum(len(rows) for rows in grouped.values())
    solar = grouped["energy/solar.md"]
    assert {row["collection"] for row in solar} == {"energy"}
    assert {row["shard"] for row in solar} == {shard_of("energy/solar.md", SHARD_COUNT)}
    assert {row["content_hash"] for row in solar} == {sha256(corpus / "energy/solar.md")}
    assert all(row["source_version"] for row in solar)
    assert {json.loads(row["user_metadata"])["team"] for row in solar} == {"facilities"}
    assert {row["embedding_model"] for row in solar} == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert any("Title" in row["element_types"] for row in solar)
    assert any(row["title"] == "Solar panels" or row["title"] == "Maintenance" for row in solar)
    assert grouped["bikes.txt"][0]["collection"] == "default"
    assert [row["ordinal"] for row in sorted(solar, key=lambda r: r["ordinal"])] == list(
        range(len(solar))
    )

    hits = pipeline.open_index().search(
        pipeline.embedder.embed_query("how hot should the water be for tea"), k=1
    )
    assert hits[0].document == "kitchen/tea.html"


def test_unchanged_rerun_embeds_nothing(corpus: Path, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(corpus)
    pipeline.ingest()
    before = index_snapshot(pipeline)
    version = pipeline.open_index().table.version
    second = pipeline.ingest()
    assert second.shards_run == []
    assert second.as_json()["documents"]["unchanged"] == 3
    assert second.as_json()["chunks"] == {"written": 0, "deleted": 0}
    # Even when a run is forced, no stage redoes finished work.
    shard = shard_of("bikes.txt", SHARD_COUNT)
    forced = pipeline.definitions.resolve_job_def("ingest_job").execute_in_process(
        partition_key=shard, instance=dg.DagsterInstance.ephemeral()
    )
    embedded = forced.asset_materializations_for_node("chunk_embeddings")[0].metadata
    chunked = forced.asset_materializations_for_node("document_chunks")[0].metadata
    indexed = forced.asset_materializations_for_node("vector_index")[0].metadata
    assert embedded["documents_embedded"].value == 0
    assert chunked["documents_chunked"].value == 0
    assert indexed["chunks_written"].value == 0
    assert pipeline.open_index().table.version == version
    assert index_snapshot(pipeline) == before


def test_changed_document_replaces_its_chunks(corpus: Path, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(corpus)
    pipeline.ingest()
    old = {row["chunk_id"] for row in rows_by_document(pipeline)["kitchen/tea.html"]}
    untouched = rows_by_document(pipeline)["bikes.txt"]
    write(corpus, "kitchen/tea.html", HTML.replace("eighty degrees", "seventy-five degrees"))
    summary = pipeline.ingest()
    assert summary.as_json()["documents"]["changed"] == 1
    assert summary.as_json()["documents"]["new"] == 0
    grouped = rows_by_document(pipeline)
    new = {row["chunk_id"] for row in grouped["kitchen/tea.html"]}
    removed = old - new
    assert removed, "the edited chunk must get a new content-addressed id"
    assert not removed & {row["chunk_id"] for rows in grouped.values() for row in rows}
    assert not any("eighty degrees" in row["text"] for row in grouped["kitchen/tea.html"])
    assert any("seventy-five degrees" in row["text"] for row in grouped["kitchen/tea.html"])
    assert grouped["bikes.txt"] == untouched
    assert summary.chunks_deleted >= 1


def test_sidecar_change_updates_metadata(corpus: Path, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(corpus)
    pipeline.ingest()
    write(corpus, "energy/solar.md.metadata.json", '{"metadataAttributes": {"team": "energy"}}')
    assert pipeline.ingest().as_json()["documents"]["changed"] == 1
    rows = rows_by_document(pipeline)["energy/solar.md"]
    assert {json.loads(row["user_metadata"])["team"] for row in rows} == {"energy"}


def test_deleted_document_leaves_the_index(corpus: Path, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(corpus)
    pipeline.ingest()
    tea_chunks = len(rows_by_document(pipeline)["kitchen/tea.html"])
    (corpus / "kitchen/tea.html").unlink()
    summary = pipeline.ingest()
    assert summary.as_json()["documents"]["deleted"] == 1
    assert summary.chunks_deleted == tea_chunks
    assert "kitchen/tea.html" not in rows_by_document(pipeline)
    assert not any(
        "tea" in path.name for path in (pipeline.settings.home_path / "processed").rglob("*")
    )
    assert pipeline.open_index().count() == sum(len(r) for r in rows_by_document(pipeline).values())


def test_bad_documents_are_quarantined_and_never_block_the_rest(
    corpus: Path, make_pipeline: PipelineFactory
) -> None:
    write(corpus, "bad/empty.txt", b"")
    write(corpus, "bad/broken.pdf", b"%PDF-1.7\n1 0 obj <<\n garbage without end")
    write(corpus, "bad/archive.zip", b"PK\x05\x06" + b"\x00" * 18)
    write(corpus, "bad/huge.txt", "big " * 20_000)
    write(corpus, "bad/tagged.md", "# Tagged\n\nSome text about tagging.\n")
    write(corpus, "bad/tagged.md.metadata.json", "{not json")
    pipeline = make_pipeline(corpus, max_document_bytes=50_000)
    summary = pipeline.ingest()
    assert summary.as_json()["documents"]["new"] == 8
    assert summary.as_json()["documents"]["quarantined"] == 5
    reasons = {entry.document: entry.reason for entry in pipeline.quarantine()}
    assert reasons == {
        "bad/empty.txt": "empty",
        "bad/broken.pdf": "corrupt",
        "bad/archive.zip": "unsupported_type",
        "bad/huge.txt": "too_large",
        "bad/tagged.md": "invalid_metadata_sidecar",
    }
    assert all(entry.detail for entry in pipeline.quarantine())
    assert set(rows_by_document(pipeline)) == {"energy/solar.md", "kitchen/tea.html", "bikes.txt"}
    assert (corpus / "bad/empty.txt").read_bytes() == b""  # the raw object is never modified

    # Unchanged quarantined files are not retried; a fixed file is.
    assert pipeline.ingest().shards_run == []
    write(corpus, "bad/empty.txt", "Now this file has words about quarantine release.")
    write(corpus, "bad/tagged.md.metadata.json", '{"label": "fixed"}')
    summary = pipeline.ingest()
    assert summary.as_json()["documents"]["changed"] == 2
    assert {"bad/empty.txt", "bad/tagged.md"} <= set(rows_by_document(pipeline))
    assert {entry.document for entry in pipeline.quarantine()} == {
        "bad/broken.pdf",
        "bad/archive.zip",
        "bad/huge.txt",
    }


def test_a_changed_document_that_breaks_leaves_no_stale_chunks(
    corpus: Path, make_pipeline: PipelineFactory
) -> None:
    pipeline = make_pipeline(corpus)
    pipeline.ingest()
    write(corpus, "bikes.txt", b"")
    pipeline.ingest()
    assert "bikes.txt" not in rows_by_document(pipeline)
    assert [entry.document for entry in pipeline.quarantine()] == ["bikes.txt"]


def test_a_configuration_change_never_mixes_vectors(
    corpus: Path, make_pipeline: PipelineFactory, tmp_path: Path
) -> None:
    first = make_pipeline(corpus)
    first.ingest()
    table = first.open_index().name
    # Pointing a different chunker at the same table is refused with the reason.
    pinned = make_pipeline(
        corpus, index_table=table, chunk_max_characters=400, chunk_new_after_characters=300
    )
    with pytest.raises(ManifestMismatch, match="chunker_version"):
        pinned.ingest()
    # Left to derive its table, the new configuration builds a separate index.
    rechunked = make_pipeline(corpus, chunk_max_characters=400, chunk_new_after_characters=300)
    rechunked.ingest()
    assert rechunked.open_index().name != table
    assert first.open_index().count() > 0

import json
from datetime import UTC, datetime

import pytest

from lorechat_pipeline.core.catalog import (
    DEFAULT_COLLECTION,
    SidecarError,
    build_entry,
    catalog_from_table,
    catalog_to_table,
    collection_of,
    diff_catalogs,
    is_ignored,
    list_shard,
    parse_sidecar,
)
from lorechat_pipeline.core.ids import SHARD_COUNT, shard_of
from lorechat_pipeline.core.storage import ObjectInfo

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def info(key: str, etag: str = "e1", size: int = 5) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag=etag, version_id=None, last_modified=NOW)


def test_collection_is_the_top_level_prefix() -> None:
    assert collection_of("hr/policies/leave.pdf") == "hr"
    assert collection_of("readme.md") == DEFAULT_COLLECTION


def test_hidden_files_are_ignored() -> None:
    assert is_ignored(".DS_Store")
    assert is_ignored("docs/.~lock.report.docx#")
    assert is_ignored(".git/config")
    assert not is_ignored("docs/report.docx")
    # S3 keeps `.` and `..` segments as plain characters: such keys are documents, not hidden.
    assert not is_ignored("../escape.md")
    assert not is_ignored("a/./b/../c.md")


def test_sidecar_accepts_bedrock_and_plain_shapes() -> None:
    bedrock = {"metadataAttributes": {"team": "hr", "year": 2024, "tags": ["a", "b"]}}
    assert parse_sidecar(json.dumps(bedrock).encode()) == {
        "team": "hr",
        "year": 2024,
        "tags": ["a", "b"],
    }
    typed = {"metadataAttributes": {"team": {"value": {"type": "STRING", "stringValue": "hr"}}}}
    assert parse_sidecar(json.dumps(typed).encode()) == {"team": "hr"}
    assert parse_sidecar(b'{"owner": "ana"}') == {"owner": "ana"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"metadataAttributes": 3}', "must be an object"),
        (b'{"nested": {"a": 1}}', "string, number"),
        (json.dumps({"notes": "x" * 11_000}).encode(), "exceed the 10240-byte limit"),
    ],
)
def test_bad_sidecars_are_refused_with_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(SidecarError, match=message):
        parse_sidecar(raw)


def test_listing_pairs_sidecars_and_filters_the_shard() -> None:
    keys = [f"docs/file-{i}.md" for i in range(64)]
    objects = [info(k) for k in keys] + [info(k + ".metadata.json") for k in keys[:10]]
    shard = shard_of(keys[0], SHARD_COUNT)
    listing = list_shard(objects, shard, SHARD_COUNT)
    assert keys[0] in listing.documents
    assert all(shard_of(k, SHARD_COUNT) == shard for k in listing.documents)
    assert keys[0] in listing.sidecars
    assert not any(k.endswith(".metadata.json") for k in listing.documents)


def test_entries_fingerprint_content_and_sidecar() -> None:
    plain = build_entry(
        info("a.md"), "shard-000", data=b"hello", version_id=None, sidecar=None, sidecar_data=None
    )
    same = build_entry(
        info("a.md", etag="e2"),
        "shard-000",
        data=b"hello",
        version_id=None,
        sidecar=None,
        sidecar_data=None,
    )
    edited = build_entry(
        info("a.md"), "shard-000", data=b"hello!", version_id=None, sidecar=None, sidecar_data=None
    )
    tagged = build_entry(
        info("a.md"),
        "shard-000",
        data=b"hello",
        version_id=None,
        sidecar=info("a.md.metadata.json"),
        sidecar_data=b'{"team": "hr"}',
    )
    broken = build_entry(
        info("a.md"),
        "shard-000",
        data=b"hello",
        version_id=None,
        sidecar=info("a.md.metadata.json"),
        sidecar_data=b"{",
    )
    assert plain.content_fp == same.content_fp  # a touched file with the same bytes is unchanged
    assert plain.content_fp != edited.content_fp
    assert plain.content_fp != tagged.content_fp
    assert tagged.user_metadata == '{"team": "hr"}'
    assert broken.sidecar_error
    assert "not valid JSON" in broken.sidecar_error
    oversized = build_entry(
        info("big.pdf", size=10**9),
        "shard-000",
        data=None,
        version_id=None,
        sidecar=None,
        sidecar_data=None,
    )
    assert oversized.oversized
    assert oversized.content_hash.startswith("etag:")


def test_catalog_round_trips_through_parquet_and_diffs() -> None:
    def entry(key: str, data: bytes):  # type: ignore[no-untyped-def]
        return build_entry(
            info(key), "shard-000", data=data, version_id="v1", sidecar=None, sidecar_data=None
        )

    before = {e.document: e for e in [entry("a", b"1"), entry("b", b"2"), entry("c", b"3")]}
    assert catalog_from_table(catalog_to_table(before.values())) == before
    after = {e.document: e for e in [entry("a", b"1"), entry("b", b"22"), entry("d", b"4")]}
    diff = diff_catalogs(before, after)
    assert (diff.new, diff.changed, diff.unchanged, diff.deleted) == (["d"], ["b"], ["a"], ["c"])


def test_runaway_titles_and_sections_are_clipped_on_every_chunk() -> None:
    from lorechat_pipeline.core.parsing import ParsedChunk
    from lorechat_pipeline.core.stages.chunking import MAX_LABEL_CHARACTERS, chunk_rows

    entry = build_entry(
        info("a.md"), "shard-000", data=b"hello", version_id=None, sidecar=None, sidecar_data=None
    )
    chunk = ParsedChunk(0, "hello", ("Title",), "T" * 5000, None, "Short section")
    (row,) = chunk_rows(entry, [chunk], "v1").to_pylist()
    assert len(row["title"]) == MAX_LABEL_CHARACTERS
    assert row["title"].endswith("…")
    assert row["section"] == "Short section"

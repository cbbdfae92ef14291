from collections import Counter

import pytest

from lorechat_pipeline.core.ids import (
    SHARD_COUNT,
    chunk_id,
    document_id,
    fingerprint,
    shard_index,
    shard_name,
    shard_names,
    shard_number,
    shard_of,
)


def test_document_id_is_stable_short_and_distinct() -> None:
    key = "handbook/ünïcode name with spaces.pdf"
    assert document_id(key) == document_id(key)
    assert len(document_id(key)) == 24
    assert document_id(key) != document_id(key + " ")
    assert document_id("a" * 1024).isalnum()


def test_chunk_id_is_prefixed_by_document_and_addresses_content() -> None:
    doc = document_id("a.md")
    first = chunk_id(doc, 0, "hello")
    assert first.startswith(f"{doc}#00000-")
    assert first == chunk_id(doc, 0, "hello")
    assert first != chunk_id(doc, 0, "hello!")
    assert first != chunk_id(doc, 1, "hello")
    assert first != chunk_id(document_id("b.md"), 0, "hello")


def test_fingerprint_separates_parts() -> None:
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint("x", length=8) == fingerprint("x", length=8)
    assert len(fingerprint("x", length=8)) == 8


def test_shards_are_bounded_and_balanced() -> None:
    keys = [f"collection-{i % 7}/doc-{i}.md" for i in range(20_000)]
    counts = Counter(shard_index(key, SHARD_COUNT) for key in keys)
    assert set(counts) == set(range(SHARD_COUNT))
    expected = len(keys) / SHARD_COUNT
    assert all(0.8 * expected < count < 1.2 * expected for count in counts.values())
    assert len(shard_names(SHARD_COUNT)) == SHARD_COUNT


def test_shard_names_round_trip() -> None:
    assert shard_name(3) == "shard-003"
    assert shard_number("shard-003") == 3
    assert shard_of("a/b.md", SHARD_COUNT) == shard_name(shard_index("a/b.md", SHARD_COUNT))
    with pytest.raises(ValueError, match="not a shard"):
        shard_number("s3")

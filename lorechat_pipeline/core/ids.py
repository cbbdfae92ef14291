"""Deterministic, content-addressed identifiers and the bounded shard layout.

Every id is a pure function of what it names, so a re-run, a retry or a crash recovery always
converges on the same rows.
"""

import hashlib

# Fixed for the life of an index: changing it moves documents between partitions, which is a
# migration (re-ingest into a new index), not a setting. 16 shards keep Dagster's partition count
# tiny whatever the corpus size while letting runs for different shards proceed independently.
SHARD_COUNT = 16


def _digest(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8", "surrogatepass")
        # Length-prefixing keeps ("ab", "c") and ("a", "bc") apart.
        hasher.update(len(encoded).to_bytes(8, "big"))
        hasher.update(encoded)
    return hasher.hexdigest()


def document_id(source_key: str) -> str:
    """A short, fixed-length id for a document: safe in SQL filters, paths and vector-store ids.

    Source keys can be 1,024 characters of arbitrary unicode, so they are never used as ids
    themselves; the key is kept beside the id as lineage.
    """
    return _digest("document", source_key)[:24]


def chunk_id(doc_id: str, ordinal: int, text: str) -> str:
    """`{document_id}#{ordinal}-{text digest}`: prefix-deletable per document, content-addressed."""
    return f"{doc_id}#{ordinal:05d}-{_digest('chunk', doc_id, str(ordinal), text)[:12]}"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(*parts: str, length: int = 12) -> str:
    """A short stable digest of configuration values (chunker or embedder settings)."""
    return _digest(*parts)[:length]


def shard_index(source_key: str, shard_count: int) -> int:
    # A hash of the key, not of the content: a document stays in its shard when it changes.
    return int(_digest("shard", source_key)[:8], 16) % shard_count


def shard_name(index: int) -> str:
    return f"shard-{index:03d}"


def shard_names(shard_count: int) -> list[str]:
    return [shard_name(i) for i in range(shard_count)]


def shard_of(source_key: str, shard_count: int) -> str:
    return shard_name(shard_index(source_key, shard_count))


def shard_number(name: str) -> int:
    prefix = "shard-"
    if not name.startswith(prefix) or not name[len(prefix) :].isdigit():
        raise ValueError(f"not a shard partition key: {name!r}")
    return int(name[len(prefix) :])

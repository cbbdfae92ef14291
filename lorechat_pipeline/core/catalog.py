"""The document catalog: what one shard of the source holds, and how it differs from last time."""

import hashlib
import json
import posixpath
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import pyarrow as pa

from lorechat_pipeline.core.ids import content_hash, document_id, fingerprint, shard_of
from lorechat_pipeline.core.storage import ObjectInfo

SIDECAR_SUFFIX = ".metadata.json"
DEFAULT_COLLECTION = "default"


class SidecarError(ValueError):
    pass


def is_sidecar(key: str) -> bool:
    return key.endswith(SIDECAR_SUFFIX)


def owner_of(key: str) -> str:
    """The document a key belongs to (a sidecar belongs to the document beside it)."""
    return key[: -len(SIDECAR_SUFFIX)] if is_sidecar(key) else key


def is_ignored(key: str) -> bool:
    """Hidden files and folders (swap files, .DS_Store, our temp files) are not documents.

    `.` and `..` are not hidden: S3 keeps them as plain characters ("a/../b.md" is its own key),
    and the key is only lineage (ids and paths are digests), so such a document is indexed."""
    return any(part.startswith(".") and part not in (".", "..") for part in key.split("/"))


def collection_of(key: str) -> str:
    """The top-level folder (prefix) of a key names its collection."""
    head, sep, _ = key.partition("/")
    return head if sep else DEFAULT_COLLECTION


# The attributes ride on every chunk of the document, so they are kept small.
MAX_SIDECAR_METADATA_BYTES = 10 * 1024


def parse_sidecar(data: bytes) -> dict[str, Any]:
    """User metadata from a `<file>.metadata.json` sidecar.

    Accepts the Bedrock Knowledge Bases shape `{"metadataAttributes": {...}}` and a plain object.
    """
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SidecarError(f"not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise SidecarError("must hold a JSON object")
    attributes = raw.get("metadataAttributes", raw)
    if not isinstance(attributes, dict):
        raise SidecarError('"metadataAttributes" must be an object')
    flat: dict[str, Any] = {}
    for name, value in attributes.items():
        # Bedrock also allows {"value": {"type": "STRING", "stringValue": "..."}} entries.
        if isinstance(value, dict) and "value" in value and isinstance(value["value"], dict):
            typed = value["value"]
            value = next((v for k, v in typed.items() if k != "type"), None)
        if not isinstance(value, str | int | float | bool | list) and value is not None:
            raise SidecarError(f"attribute {name!r} must be a string, number, boolean or list")
        flat[str(name)] = value
    size = len(json.dumps(flat, sort_keys=True).encode())
    if size > MAX_SIDECAR_METADATA_BYTES:
        raise SidecarError(
            f"{size} bytes of attributes exceed the {MAX_SIDECAR_METADATA_BYTES}-byte limit "
            "(Bedrock Knowledge Bases' own; every chunk carries them, and Upstash Vector takes "
            "at most 48 KB of metadata per vector)"
        )
    return flat


@dataclass(frozen=True)
class CatalogEntry:
    document: str
    document_id: str
    collection: str
    shard: str
    size: int
    etag: str
    version_id: str | None
    last_modified: datetime
    # sha256 of the bytes; for objects too large to read, derived from the ETag instead.
    content_hash: str
    oversized: bool = False
    sidecar_etag: str | None = None
    user_metadata: str | None = None  # canonical JSON of the sidecar's attributes
    sidecar_error: str | None = None
    content_fp: str = field(default="")

    def listed_unchanged(self, info: ObjectInfo, sidecar: ObjectInfo | None) -> bool:
        """The listing shows the same bytes and sidecar this entry was made from (ETag, size)."""
        return (self.etag, self.size, self.sidecar_etag) == (
            info.etag,
            info.size,
            sidecar.etag if sidecar else None,
        )

    def with_fingerprint(self) -> "CatalogEntry":
        return replace(
            self,
            content_fp=fingerprint(
                self.content_hash, self.user_metadata or "", self.sidecar_error or "", length=16
            ),
        )


CATALOG_SCHEMA = pa.schema(
    [
        pa.field("document", pa.string(), nullable=False),
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("collection", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("etag", pa.string(), nullable=False),
        pa.field("version_id", pa.string()),
        pa.field("last_modified", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("oversized", pa.bool_(), nullable=False),
        pa.field("sidecar_etag", pa.string()),
        pa.field("user_metadata", pa.string()),
        pa.field("sidecar_error", pa.string()),
        pa.field("content_fp", pa.string(), nullable=False),
    ]
)


def catalog_to_table(entries: Iterable[CatalogEntry]) -> pa.Table:
    return pa.Table.from_pylist([asdict(e) for e in entries], schema=CATALOG_SCHEMA)


def catalog_from_table(table: pa.Table | None) -> dict[str, CatalogEntry]:
    if table is None:
        return {}
    return {row["document"]: CatalogEntry(**row) for row in table.to_pylist()}


@dataclass
class ShardListing:
    documents: dict[str, ObjectInfo] = field(default_factory=dict)
    sidecars: dict[str, ObjectInfo] = field(default_factory=dict)  # keyed by the document's key


def list_shard(objects: Iterable[ObjectInfo], shard: str, shard_count: int) -> ShardListing:
    listing = ShardListing()
    for info in objects:
        if is_ignored(info.key):
            continue
        if is_sidecar(info.key):
            owner = owner_of(info.key)
            if shard_of(owner, shard_count) == shard:
                listing.sidecars[owner] = info
        elif shard_of(info.key, shard_count) == shard:
            listing.documents[info.key] = info
    return listing


@dataclass
class CatalogDiff:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def oversized_hash(info: ObjectInfo) -> str:
    return "etag:" + hashlib.sha256(f"{info.etag}|{info.size}".encode()).hexdigest()


def build_entry(
    info: ObjectInfo,
    shard: str,
    *,
    data: bytes | None,
    version_id: str | None,
    sidecar: ObjectInfo | None,
    sidecar_data: bytes | None,
) -> CatalogEntry:
    user_metadata = sidecar_error = None
    if sidecar is not None and sidecar_data is not None:
        try:
            user_metadata = json.dumps(parse_sidecar(sidecar_data), sort_keys=True)
        except SidecarError as error:
            sidecar_error = f"{posixpath.basename(sidecar.key)}: {error}"
    return CatalogEntry(
        document=info.key,
        document_id=document_id(info.key),
        collection=collection_of(info.key),
        shard=shard,
        size=info.size,
        etag=info.etag,
        version_id=version_id,
        last_modified=info.last_modified,
        content_hash=content_hash(data) if data is not None else oversized_hash(info),
        oversized=data is None,
        sidecar_etag=sidecar.etag if sidecar else None,
        user_metadata=user_metadata,
        sidecar_error=sidecar_error,
    ).with_fingerprint()


def diff_catalogs(
    previous: dict[str, CatalogEntry], current: dict[str, CatalogEntry]
) -> CatalogDiff:
    diff = CatalogDiff()
    for key, entry in current.items():
        before = previous.get(key)
        if before is None:
            diff.new.append(key)
        elif before.content_fp != entry.content_fp:
            diff.changed.append(key)
        else:
            diff.unchanged.append(key)
    diff.deleted = [key for key in previous if key not in current]
    return diff

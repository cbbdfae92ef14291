"""Stage 1: observe one shard of the source and record it in the catalog."""

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lorechat_pipeline.core.catalog import (
    SIDECAR_SUFFIX,
    CatalogDiff,
    CatalogEntry,
    ShardListing,
    build_entry,
    catalog_from_table,
    catalog_to_table,
    collection_of,
    diff_catalogs,
    is_ignored,
    is_sidecar,
    list_shard,
    owner_of,
)
from lorechat_pipeline.core.ids import shard_names, shard_of
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.storage import ObjectInfo, ObjectNotFound, ObjectStore
from lorechat_pipeline.core.tables import read_table, write_table

logger = logging.getLogger(__name__)


@dataclass
class Observation:
    shard: str
    entries: dict[str, CatalogEntry]
    diff: CatalogDiff
    bytes_hashed: int
    # Why the deletion guard kept this shard's deletions out (None when nothing was refused).
    refused_deletions: str | None = None


def load_catalog(processed: ObjectStore, shard: str) -> dict[str, CatalogEntry]:
    return catalog_from_table(read_table(processed, ProcessedLayout.catalog(shard)))


@dataclass(frozen=True)
class DeletionGuard:
    """Stops a run that would delete a large share of a collection (a listing gone wrong)."""

    max_share: float = 0.2
    min_documents: int = 10
    confirmed: bool = False


class DeletionRefused(RuntimeError):
    pass


def deletions_by_collection(
    processed: ObjectStore, listing: Iterable[ObjectInfo], shard_count: int
) -> tuple[Counter[str], Counter[str]]:
    """(catalogued documents, documents the listing no longer has) per collection, all shards."""
    listed = {info.key for info in listing if not is_ignored(info.key) and not is_sidecar(info.key)}
    catalogued: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for shard in shard_names(shard_count):
        for key, entry in load_catalog(processed, shard).items():
            catalogued[entry.collection] += 1
            if key not in listed:
                missing[entry.collection] += 1
    return catalogued, missing


def enforce_deletion_guard(
    guard: DeletionGuard,
    deleted_keys: Sequence[str],
    listing: Iterable[ObjectInfo],
    processed: ObjectStore,
    shard_count: int,
) -> None:
    if guard.confirmed or not deleted_keys:
        return
    # Judged on the whole source, not the shard: a shard holds a sixteenth of a collection.
    catalogued, missing = deletions_by_collection(processed, listing, shard_count)
    touched = {collection_of(key) for key in deleted_keys}
    refused = [
        f"{missing[c]} of {catalogued[c]} documents ({missing[c] / catalogued[c]:.0%}) of "
        f"collection {c!r}"
        for c in sorted(touched)
        if missing[c] >= guard.min_documents and missing[c] > guard.max_share * catalogued[c]
    ]
    if refused:
        raise DeletionRefused(
            "refusing to delete "
            + "; ".join(refused)
            + f" from the index: more than the {guard.max_share:.0%} deletion guard "
            "(LORECHAT_DELETION_GUARD_SHARE). A listing error must never wipe an index. If the "
            "documents really were deleted, confirm it: `lorechat ingest --confirm-deletions`, or "
            "run config `ops: {raw_documents: {config: {confirm_deletions: true}}}`."
        )


def head_keys(
    source: ObjectStore, keys: Iterable[str], shard: str, shard_count: int
) -> ShardListing:
    """The listing of just these keys (event mode): a HEAD per key instead of a bucket listing."""
    owners = {owner_of(key) for key in keys}
    listing = ShardListing()
    for owner in sorted(owners):
        if is_ignored(owner) or shard_of(owner, shard_count) != shard:
            continue
        info = source.head(owner)
        if info is None:
            continue
        listing.documents[owner] = info
        sidecar = source.head(owner + SIDECAR_SUFFIX)
        if sidecar is not None:
            listing.sidecars[owner] = sidecar
    return listing


def read_entry(
    source: ObjectStore,
    info: ObjectInfo,
    sidecar: ObjectInfo | None,
    shard: str,
    max_document_bytes: int,
) -> tuple[CatalogEntry, bytes | None]:
    """Read a listed document (and its sidecar) into its catalog entry; the bytes are None when
    the document is too large to read. Raises ObjectNotFound when it is gone."""
    data: bytes | None = None
    version_id = None
    if info.size <= max_document_bytes:
        data, version_id = source.read_versioned(info.key)
    sidecar_data = source.read(sidecar.key) if sidecar else None
    entry = build_entry(
        info,
        shard,
        data=data,
        version_id=version_id,
        sidecar=sidecar,
        sidecar_data=sidecar_data,
    )
    return entry, data


def observe_shard(
    source: ObjectStore,
    processed: ObjectStore,
    shard: str,
    *,
    shard_count: int,
    max_document_bytes: int,
    listing: Iterable[ObjectInfo] | None = None,
    keys: Sequence[str] | None = None,
    guard: DeletionGuard | None = None,
) -> Observation:
    """Record the shard's documents in its catalog.

    `keys`: only these objects changed (S3 events); they are looked up one by one and the rest
    of the catalog is kept. Otherwise the whole source is listed.
    """
    previous = load_catalog(processed, shard)
    entries: dict[str, CatalogEntry] = {}
    objects: Sequence[ObjectInfo] = []
    if keys is not None:
        found = head_keys(source, keys, shard, shard_count)
        touched = {owner_of(key) for key in keys}
        entries = {key: entry for key, entry in previous.items() if key not in touched}
    else:
        objects = list(source.list_objects() if listing is None else listing)
        found = list_shard(objects, shard, shard_count)
    bytes_hashed = 0
    for key, info in sorted(found.documents.items()):
        sidecar = found.sidecars.get(key)
        before = previous.get(key)
        if before is not None and before.listed_unchanged(info, sidecar):
            entries[key] = before  # same ETag and size: the bytes have not changed
            continue
        try:
            entry, data = read_entry(source, info, sidecar, shard, max_document_bytes)
        except ObjectNotFound:
            logger.info("%s disappeared while it was being observed", key)
            continue
        bytes_hashed += len(data or b"")
        entries[key] = entry
    diff = diff_catalogs(previous, entries)
    refused: str | None = None
    if guard is not None and keys is None:
        # Event-mode deletions were each confirmed by a HEAD; a listing may be partial.
        try:
            enforce_deletion_guard(guard, diff.deleted, objects, processed, shard_count)
        except DeletionRefused as refusal:
            # Only the deletions are refused: the documents stay catalogued (and indexed), and
            # new or changed documents of the shard go on as usual.
            refused = str(refusal)
            entries.update({key: previous[key] for key in diff.deleted})
            diff = diff_catalogs(previous, entries)
    write_table(processed, ProcessedLayout.catalog(shard), catalog_to_table(entries.values()))
    return Observation(shard, entries, diff, bytes_hashed, refused)

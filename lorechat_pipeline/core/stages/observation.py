"""Stage 1: observe one shard of the source and record it in the catalog."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from lorechat_pipeline.core.catalog import (
    CatalogDiff,
    CatalogEntry,
    build_entry,
    catalog_from_table,
    catalog_to_table,
    diff_catalogs,
    list_shard,
)
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


def load_catalog(processed: ObjectStore, shard: str) -> dict[str, CatalogEntry]:
    return catalog_from_table(read_table(processed, ProcessedLayout.catalog(shard)))


def observe_shard(
    source: ObjectStore,
    processed: ObjectStore,
    shard: str,
    *,
    shard_count: int,
    max_document_bytes: int,
    listing: Iterable[ObjectInfo] | None = None,
) -> Observation:
    previous = load_catalog(processed, shard)
    found = list_shard(source.list_objects() if listing is None else listing, shard, shard_count)
    entries: dict[str, CatalogEntry] = {}
    bytes_hashed = 0
    for key, info in sorted(found.documents.items()):
        sidecar = found.sidecars.get(key)
        before = previous.get(key)
        if (
            before is not None
            and before.etag == info.etag
            and before.size == info.size
            and before.sidecar_etag == (sidecar.etag if sidecar else None)
        ):
            entries[key] = before  # same ETag and size: the bytes have not changed
            continue
        try:
            data: bytes | None = None
            version_id = None
            if info.size <= max_document_bytes:
                data, version_id = source.read_versioned(key)
                bytes_hashed += len(data)
            sidecar_data = source.read(sidecar.key) if sidecar else None
        except ObjectNotFound:
            logger.info("%s disappeared while it was being observed", key)
            continue
        entries[key] = build_entry(
            info,
            shard,
            data=data,
            version_id=version_id,
            sidecar=sidecar,
            sidecar_data=sidecar_data,
        )
    write_table(processed, ProcessedLayout.catalog(shard), catalog_to_table(entries.values()))
    return Observation(shard, entries, diff_catalogs(previous, entries), bytes_hashed)

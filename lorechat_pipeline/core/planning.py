"""Which shards need a run: a cheap comparison of a listing against what each stage recorded."""

from collections.abc import Iterable
from dataclasses import dataclass, field

from lorechat_pipeline.core.catalog import CatalogEntry, list_shard, owner_of
from lorechat_pipeline.core.ids import shard_names, shard_of
from lorechat_pipeline.core.ledger import CHUNKED, LedgerEntry
from lorechat_pipeline.core.storage import ObjectInfo


@dataclass
class ShardPlan:
    shard: str
    documents: int
    reason: str | None  # None: the shard is in step and needs no run


@dataclass
class IngestPlan:
    shards: list[ShardPlan] = field(default_factory=list)
    # The source listing the plan was made from, by shard.
    listings: dict[str, list[ObjectInfo]] = field(default_factory=dict, repr=False)

    @property
    def to_run(self) -> list[str]:
        return [plan.shard for plan in self.shards if plan.reason]

    @property
    def documents_in_settled_shards(self) -> int:
        return sum(plan.documents for plan in self.shards if not plan.reason)


def listing_differs(
    documents: dict[str, ObjectInfo],
    sidecars: dict[str, ObjectInfo],
    catalog: dict[str, CatalogEntry],
) -> bool:
    if documents.keys() != catalog.keys():
        return True
    return not all(
        catalog[key].listed_unchanged(info, sidecars.get(key)) for key, info in documents.items()
    )


def unsettled_reason(
    catalog: dict[str, CatalogEntry],
    chunk_ledger: dict[str, LedgerEntry],
    embedding_ledger: dict[str, LedgerEntry],
    index_versions: dict[str, str],
) -> str | None:
    """Why the stages after observation have not converged on the catalog (None if they have)."""
    expected = {e.document_id: e.content_fp for e in catalog.values()}
    if {d: e.content_fp for d, e in chunk_ledger.items()} != expected:
        return "chunks behind the catalog"
    chunked = {d: e.content_fp for d, e in chunk_ledger.items() if e.status == CHUNKED}
    if {d: e.content_fp for d, e in embedding_ledger.items()} != chunked:
        return "embeddings behind the chunks"
    if index_versions != chunked:
        return "index behind the embeddings"
    return None


def group_listing(objects: Iterable[ObjectInfo], shard_count: int) -> dict[str, list[ObjectInfo]]:
    """One pass over the listing, split by shard (list_shard then filters each group cheaply)."""
    groups: dict[str, list[ObjectInfo]] = {name: [] for name in shard_names(shard_count)}
    for info in objects:
        groups[shard_of(owner_of(info.key), shard_count)].append(info)
    return groups


def plan_shard(
    shard: str,
    objects: list[ObjectInfo],
    shard_count: int,
    catalog: dict[str, CatalogEntry],
    chunk_ledger: dict[str, LedgerEntry],
    embedding_ledger: dict[str, LedgerEntry],
    index_versions: dict[str, str],
) -> ShardPlan:
    listing = list_shard(objects, shard, shard_count)
    if listing_differs(listing.documents, listing.sidecars, catalog):
        return ShardPlan(shard, len(listing.documents), "source changed")
    reason = unsettled_reason(catalog, chunk_ledger, embedding_ledger, index_versions)
    return ShardPlan(shard, len(listing.documents), reason)

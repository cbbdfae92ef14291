"""What changed in the source since the last look, in a form small enough for a sensor cursor.

A polling sensor cannot keep a million keys in its cursor. It keeps one digest per shard of the
(key, ETag, size) triples it listed: any new, modified or deleted object changes its shard's
digest, so the cursor stays a few hundred bytes whatever the corpus size, and the runs it asks
for are exactly the shards whose digest moved. The digest also names the run (its run key), so
a duplicate tick over the same listing asks for the same runs and Dagster drops the repeats.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lorechat_pipeline.core.catalog import is_ignored, owner_of
from lorechat_pipeline.core.ids import shard_names, shard_of
from lorechat_pipeline.core.storage import ObjectInfo

CURSOR_FORMAT = 1
DIGEST_LENGTH = 16


def shard_digests(objects: Iterable[ObjectInfo], shard_count: int) -> dict[str, str]:
    """One digest per shard over its objects' (key, ETag, size); order-independent, streaming."""
    # XOR of per-object hashes: no sort, so memory stays flat however long the listing is.
    accumulators = {name: 0 for name in shard_names(shard_count)}
    counts = dict.fromkeys(accumulators, 0)
    for info in objects:
        if is_ignored(info.key):
            continue
        shard = shard_of(owner_of(info.key), shard_count)
        entry = f"{info.key}\0{info.etag}\0{info.size}".encode()
        accumulators[shard] ^= int.from_bytes(hashlib.sha256(entry).digest()[:16], "big")
        counts[shard] += 1
    return {
        shard: hashlib.sha256(f"{counts[shard]}:{value:032x}".encode()).hexdigest()[:DIGEST_LENGTH]
        for shard, value in accumulators.items()
    }


@dataclass(frozen=True)
class ListingCursor:
    digests: dict[str, str]

    def serialize(self) -> str:
        return json.dumps({"format": CURSOR_FORMAT, "digests": self.digests}, sort_keys=True)

    @classmethod
    def parse(cls, raw: str | None) -> "ListingCursor | None":
        """None for a missing or unreadable cursor (the sensor then treats every shard as new)."""
        if not raw:
            return None
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("format") != CURSOR_FORMAT:
            return None
        return cls({str(k): str(v) for k, v in payload.get("digests", {}).items()})


def changed_shards(previous: ListingCursor | None, current: Mapping[str, str]) -> list[str]:
    """Shards whose digest differs from the last tick (all of them after a lost cursor)."""
    before = previous.digests if previous else {}
    return sorted(shard for shard, digest in current.items() if before.get(shard) != digest)


def run_key(trigger: str, shard: str, digest: str) -> str:
    return f"{trigger}:{shard}:{digest}"

"""Index versions and the alias that names the current one (blue/green re-embedding).

Each configuration of model and chunker writes its own table (an index version). Readers never
pick a table themselves: they follow the alias, a small JSON document beside the tables, which a
promotion replaces in one atomic write. Versions the alias no longer names are kept for a
retention period (so a bad promotion can be rolled back) and then dropped.

No dagster import: the serving container follows the alias with this module.
"""

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta

from lorechat_pipeline.core.storage import ObjectNotFound, ObjectStore

ALIAS_KEY = "_lorechat/alias.json"
ALIAS_FORMAT = 1


@dataclass(frozen=True)
class RetiredVersion:
    table: str
    retired_at: str  # ISO 8601, UTC


@dataclass(frozen=True)
class IndexAlias:
    table: str  # the current version: what searches read
    promoted_at: str
    reason: str
    retired: tuple[RetiredVersion, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        payload = asdict(self) | {"format": ALIAS_FORMAT}
        return json.dumps(payload, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "IndexAlias":
        payload = json.loads(raw)
        if payload.get("format") != ALIAS_FORMAT:
            raise ValueError(f"unknown index alias format {payload.get('format')!r}")
        return cls(
            table=payload["table"],
            promoted_at=payload["promoted_at"],
            reason=payload["reason"],
            retired=tuple(RetiredVersion(**item) for item in payload.get("retired", [])),
        )

    def expired(self, retention: timedelta, now: datetime) -> list[str]:
        """Retired versions past the retention period (never the current one)."""
        return [
            version.table
            for version in self.retired
            if version.table != self.table
            and datetime.fromisoformat(version.retired_at) + retention <= now
        ]


def _now() -> datetime:
    return datetime.now(UTC)


class AliasStore:
    """Reads and switches the alias kept at the index location (a folder or an S3 prefix)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def read(self) -> IndexAlias | None:
        try:
            return IndexAlias.from_json(self.store.read(ALIAS_KEY))
        except ObjectNotFound:
            return None

    def current_table(self) -> str | None:
        alias = self.read()
        return alias.table if alias else None

    def promote(self, table: str, reason: str, now: datetime | None = None) -> IndexAlias:
        """Point the alias at `table` in one write; the version it replaces starts retiring."""
        moment = (now or _now()).isoformat()
        previous = self.read()
        retired = [v for v in (previous.retired if previous else ()) if v.table != table]
        if previous and previous.table != table:
            retired.append(RetiredVersion(previous.table, moment))
        alias = IndexAlias(table=table, promoted_at=moment, reason=reason, retired=tuple(retired))
        self.store.write(ALIAS_KEY, alias.to_json().encode())
        return alias

    def forget(self, tables: list[str]) -> IndexAlias | None:
        """Drop garbage-collected versions from the retired list."""
        alias = self.read()
        if alias is None or not tables:
            return alias
        kept = tuple(v for v in alias.retired if v.table not in tables)
        updated = replace(alias, retired=kept)
        self.store.write(ALIAS_KEY, updated.to_json().encode())
        return updated

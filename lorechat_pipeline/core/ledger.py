"""Per-shard ledgers: what a stage has finished, by document and content fingerprint.

A ledger is read once per run and diffed in memory against its input, so an unchanged re-run of
a shard of any size costs one small read per stage, not a request per document.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pyarrow as pa

from lorechat_pipeline.core.storage import ObjectStore
from lorechat_pipeline.core.tables import read_table, write_table

CHUNKED = "chunked"
QUARANTINED = "quarantined"


@dataclass(frozen=True)
class LedgerEntry:
    document_id: str
    document: str
    content_fp: str
    status: str  # CHUNKED or QUARANTINED (the embedding ledger only holds finished documents)
    chunk_count: int = 0
    characters: int = 0
    tokens: int = 0
    reason: str | None = None
    detail: str | None = None


LEDGER_SCHEMA = pa.schema(
    [
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("document", pa.string(), nullable=False),
        pa.field("content_fp", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("chunk_count", pa.int64(), nullable=False),
        pa.field("characters", pa.int64(), nullable=False),
        pa.field("tokens", pa.int64(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)


def load_ledger(store: ObjectStore, key: str) -> dict[str, LedgerEntry]:
    table = read_table(store, key)
    if table is None:
        return {}
    return {row["document_id"]: LedgerEntry(**row) for row in table.to_pylist()}


def save_ledger(store: ObjectStore, key: str, entries: Iterable[LedgerEntry]) -> None:
    rows = sorted((asdict(e) for e in entries), key=lambda row: row["document_id"])
    write_table(store, key, pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA))

"""Small helpers that turn stage reports into Dagster UI metadata."""

from collections.abc import Sequence

import dagster as dg

from lorechat_pipeline.core.ledger import LedgerEntry

PREVIEW_ROWS = 20


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> dg.MetadataValue:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")[:200]

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:PREVIEW_ROWS]]
    if len(rows) > PREVIEW_ROWS:
        lines.append(f"\n…and {len(rows) - PREVIEW_ROWS} more")
    return dg.MetadataValue.md("\n".join(lines))


def quarantine_table(entries: Sequence[LedgerEntry]) -> dg.MetadataValue:
    return markdown_table(
        ["document", "reason", "detail"], [(e.document, e.reason, e.detail) for e in entries]
    )

"""Stage 2: parse and chunk the documents of one shard that are new or changed.

Documents that cannot be parsed are quarantined with a reason in the ledger; the raw object is
never touched, and the document is retried as soon as its content (or sidecar) changes.
"""

import logging
import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import pyarrow as pa

from lorechat_pipeline.core.catalog import CatalogEntry
from lorechat_pipeline.core.ids import chunk_id, content_hash
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import (
    CHUNKED,
    QUARANTINED,
    LedgerEntry,
    load_ledger,
    save_ledger,
)
from lorechat_pipeline.core.parsing import DocumentRejected, ParsedChunk, ParserPool
from lorechat_pipeline.core.records import CHUNK_SCHEMA
from lorechat_pipeline.core.storage import ObjectNotFound, ObjectStore
from lorechat_pipeline.core.tables import read_table, write_table

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 30.0
MAX_LABEL_CHARACTERS = 1000


@dataclass
class ChunkingReport:
    shard: str
    chunked: list[str] = field(default_factory=list)
    quarantined: list[LedgerEntry] = field(default_factory=list)
    recovered: int = 0  # finished by an earlier, interrupted run
    removed: int = 0
    skipped_changed: list[str] = field(default_factory=list)
    chunks: int = 0
    characters: int = 0
    preview: list[dict[str, object]] = field(default_factory=list)
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)


def chunk_rows(entry: CatalogEntry, chunks: list[ParsedChunk], chunker_version: str) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "chunk_id": chunk_id(entry.document_id, chunk.ordinal, chunk.text),
                "document_id": entry.document_id,
                "document": entry.document,
                "collection": entry.collection,
                "shard": entry.shard,
                "source_version": entry.version_id or entry.etag,
                "content_hash": entry.content_hash,
                "content_fp": entry.content_fp,
                "content_type": chunk_content_type(entry),
                "ordinal": chunk.ordinal,
                "text": chunk.text,
                "title": clip(chunk.title),
                "page_number": chunk.page_number,
                "section": clip(chunk.section),
                "element_types": list(chunk.element_types),
                "user_metadata": entry.user_metadata,
                "chunker_version": chunker_version,
            }
            for chunk in chunks
        ],
        schema=CHUNK_SCHEMA,
    )


def clip(label: str | None) -> str | None:
    """A title or section heading, cut to a label's length: they ride on every chunk, and a
    runaway heading (a whole paragraph tagged as a title) must not push a chunk's metadata
    past a vector store's limit."""
    if label is None or len(label) <= MAX_LABEL_CHARACTERS:
        return label
    return label[: MAX_LABEL_CHARACTERS - 1] + "…"


def chunk_content_type(entry: CatalogEntry) -> str:
    extension = posixpath.splitext(entry.document)[1].lower().lstrip(".")
    return extension or "unknown"


def _quarantine(entry: CatalogEntry, reason: str, detail: str) -> LedgerEntry:
    return LedgerEntry(
        document_id=entry.document_id,
        document=entry.document,
        content_fp=entry.content_fp,
        status=QUARANTINED,
        reason=reason,
        detail=detail,
    )


def chunk_shard(
    source: ObjectStore,
    processed: ObjectStore,
    shard: str,
    *,
    catalog: dict[str, CatalogEntry],
    layout: ProcessedLayout,
    max_document_bytes: int,
    open_parser: Callable[[int], AbstractContextManager[ParserPool]],
    on_document: Callable[[str], None] | None = None,
    on_parsing: Callable[[], None] | None = None,
) -> ChunkingReport:
    """`open_parser(n)` opens a parser pool for `n` documents; `on_parsing` is called first
    when there is anything to parse (to warm what later stages need while workers start)."""
    report = ChunkingReport(shard)
    ledger_key = layout.chunk_ledger(shard)
    ledger = load_ledger(processed, ledger_key)
    by_id = {entry.document_id: entry for entry in catalog.values()}

    for gone in [doc_id for doc_id in ledger if doc_id not in by_id]:
        processed.delete_prefix(layout.chunks_prefix(shard, gone))
        del ledger[gone]
        report.removed += 1

    todo: list[CatalogEntry] = []
    for entry in sorted(by_id.values(), key=lambda e: e.document):
        done = ledger.get(entry.document_id)
        if done is not None and done.content_fp == entry.content_fp:
            continue
        if entry.oversized:
            ledger[entry.document_id] = _quarantine(
                entry, "too_large", f"{entry.size} bytes exceeds the limit of {max_document_bytes}"
            )
        elif entry.sidecar_error:
            ledger[entry.document_id] = _quarantine(
                entry, "invalid_metadata_sidecar", entry.sidecar_error
            )
        elif (
            existing := read_table(
                processed, layout.chunks(shard, entry.document_id, entry.content_fp)
            )
        ) is not None:
            ledger[entry.document_id] = _chunked_entry(entry, existing)
            report.recovered += 1
        else:
            todo.append(entry)
            continue
        if ledger[entry.document_id].status == QUARANTINED:
            report.quarantined.append(ledger[entry.document_id])
        processed.delete_prefix(
            layout.chunks_prefix(shard, entry.document_id),
            keep=layout.chunks(shard, entry.document_id, entry.content_fp),
        )

    def jobs() -> Iterator[tuple[str, bytes, str]]:
        for entry in todo:
            try:
                data = source.read(entry.document)
            except ObjectNotFound:
                report.skipped_changed.append(entry.document)
                continue
            if content_hash(data) != entry.content_hash:
                # Changed after it was observed: the next observation picks up the new bytes.
                report.skipped_changed.append(entry.document)
                continue
            yield entry.document_id, data, posixpath.basename(entry.document)

    last_checkpoint = time.monotonic()
    if todo:
        if on_parsing:
            on_parsing()
        with open_parser(len(todo)) as parser:
            for doc_id, outcome in parser.map(jobs()):
                entry = by_id[doc_id]
                if isinstance(outcome, DocumentRejected):
                    ledger[doc_id] = _quarantine(entry, outcome.reason, outcome.detail)
                    report.quarantined.append(ledger[doc_id])
                elif not outcome:
                    ledger[doc_id] = _quarantine(entry, "no_text", "no text could be extracted")
                    report.quarantined.append(ledger[doc_id])
                else:
                    table = chunk_rows(entry, outcome, layout.chunker_version)
                    write_table(processed, layout.chunks(shard, doc_id, entry.content_fp), table)
                    ledger[doc_id] = _chunked_entry(entry, table)
                    report.chunked.append(entry.document)
                    report.chunks += ledger[doc_id].chunk_count
                    report.characters += ledger[doc_id].characters
                    if len(report.preview) < 5:
                        report.preview.append(
                            {
                                "document": entry.document,
                                "chunks": len(outcome),
                                "first": outcome[0].text[:200],
                            }
                        )
                processed.delete_prefix(
                    layout.chunks_prefix(shard, doc_id),
                    keep=layout.chunks(shard, doc_id, entry.content_fp),
                )
                if on_document:
                    on_document(entry.document)
                if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                    save_ledger(processed, ledger_key, ledger.values())
                    last_checkpoint = time.monotonic()

    save_ledger(processed, ledger_key, ledger.values())
    report.ledger = ledger
    return report


def _chunked_entry(entry: CatalogEntry, table: pa.Table) -> LedgerEntry:
    texts = table.column("text").to_pylist()
    return LedgerEntry(
        document_id=entry.document_id,
        document=entry.document,
        content_fp=entry.content_fp,
        status=CHUNKED,
        chunk_count=len(texts),
        characters=sum(len(t) for t in texts),
    )

"""Stage 2: parse and chunk the documents of one shard that are new or changed.

Documents that cannot be parsed are quarantined with a reason in the ledger; the raw object is
never touched, and the document is retried as soon as its content (or sidecar) changes.
"""

import json
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
    recovered: int = 0  # of those chunked or quarantined, parsed earlier (parse-ahead, crash)
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

    def settle(entry: CatalogEntry, outcome: LedgerEntry) -> None:
        ledger[entry.document_id] = outcome
        if outcome.status == QUARANTINED:
            report.quarantined.append(outcome)
        processed.delete_prefix(
            layout.chunks_prefix(shard, entry.document_id),
            keep=layout.chunks(shard, entry.document_id, entry.content_fp),
        )

    def adopt(entry: CatalogEntry, parsed: LedgerEntry) -> None:
        # Chunked by this step all the same: the parse just happened earlier.
        report.recovered += 1
        if parsed.status == CHUNKED:
            report.chunked.append(entry.document)
            report.chunks += parsed.chunk_count
            report.characters += parsed.characters
        settle(entry, parsed)

    todo: list[CatalogEntry] = []
    for entry in sorted(by_id.values(), key=lambda e: e.document):
        done = ledger.get(entry.document_id)
        if done is not None and done.content_fp == entry.content_fp:
            continue
        if entry.oversized:
            settle(
                entry,
                _quarantine(
                    entry,
                    "too_large",
                    f"{entry.size} bytes exceeds the limit of {max_document_bytes}",
                ),
            )
        elif entry.sidecar_error:
            settle(entry, _quarantine(entry, "invalid_metadata_sidecar", entry.sidecar_error))
        elif (parsed := parsed_before(processed, layout, entry)) is not None:
            adopt(entry, parsed)
        else:
            todo.append(entry)

    def jobs() -> Iterator[tuple[str, bytes, str]]:
        for entry in todo:
            # A parse-ahead may have finished it while this step waited for the parser pool.
            if (parsed := parsed_before(processed, layout, entry)) is not None:
                adopt(entry, parsed)
                continue
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
                settled = record_outcome(processed, layout, entry, outcome, write_rejection=False)
                if settled.status == CHUNKED:
                    assert isinstance(outcome, list)
                    report.chunked.append(entry.document)
                    report.chunks += settled.chunk_count
                    report.characters += settled.characters
                    if len(report.preview) < 5:
                        report.preview.append(
                            {
                                "document": entry.document,
                                "chunks": len(outcome),
                                "first": outcome[0].text[:200],
                            }
                        )
                settle(entry, settled)
                if on_document:
                    on_document(entry.document)
                if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                    save_ledger(processed, ledger_key, ledger.values())
                    last_checkpoint = time.monotonic()

    save_ledger(processed, ledger_key, ledger.values())
    report.ledger = ledger
    return report


def record_outcome(
    processed: ObjectStore,
    layout: ProcessedLayout,
    entry: CatalogEntry,
    outcome: list[ParsedChunk] | DocumentRejected,
    *,
    write_rejection: bool,
) -> LedgerEntry:
    """Store what parsing `entry` gave (its chunk table, or with `write_rejection` why there are
    none) at its content-addressed place, and return the ledger entry that describes it."""
    if isinstance(outcome, DocumentRejected):
        reason, detail = outcome.reason, outcome.detail
    elif not outcome:
        reason, detail = "no_text", "no text could be extracted"
    else:
        table = chunk_rows(entry, outcome, layout.chunker_version)
        write_table(
            processed, layout.chunks(entry.shard, entry.document_id, entry.content_fp), table
        )
        return _chunked_entry(entry, table)
    if write_rejection:
        key = layout.rejection(entry.shard, entry.document_id, entry.content_fp)
        processed.write(key, json.dumps({"reason": reason, "detail": detail}).encode())
    return _quarantine(entry, reason, detail)


def is_parsed(processed: ObjectStore, layout: ProcessedLayout, entry: CatalogEntry) -> bool:
    """Whether `parsed_before` would find something, without reading it."""
    shard, doc_id, content_fp = entry.shard, entry.document_id, entry.content_fp
    return processed.exists(layout.chunks(shard, doc_id, content_fp)) or processed.exists(
        layout.rejection(shard, doc_id, content_fp)
    )


def parsed_before(
    processed: ObjectStore, layout: ProcessedLayout, entry: CatalogEntry
) -> LedgerEntry | None:
    """What an earlier parse of this very content gave (an interrupted run or a parse-ahead
    wrote it), or None when it has not been parsed."""
    shard, doc_id, content_fp = entry.shard, entry.document_id, entry.content_fp
    table = read_table(processed, layout.chunks(shard, doc_id, content_fp))
    if table is not None:
        return _chunked_entry(entry, table)
    try:
        rejection = json.loads(processed.read(layout.rejection(shard, doc_id, content_fp)))
    except ObjectNotFound:
        return None
    return _quarantine(entry, rejection["reason"], rejection["detail"])


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

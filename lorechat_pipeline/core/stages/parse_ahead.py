"""Parse a shard's new and changed documents before its run, while another shard embeds.

Embedding keeps both cores busy only while it runs; parsing the next shard in the parser
workers at the same time fills the gaps. What a parse-ahead writes is exactly what the chunk
stage would write (content-addressed chunk tables, or the reason a document has none), and the
chunk stage adopts it instead of parsing again. It never writes ledgers or catalogs: the run of
the shard still observes, decides and records everything, so a parse-ahead that is stopped, dies
or guesses wrong (a document changed in between) costs time, never correctness.
"""

import functools
import posixpath
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from lorechat_pipeline.core.catalog import CatalogEntry, list_shard
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import CHUNKED, load_ledger
from lorechat_pipeline.core.parsing import ParserPool
from lorechat_pipeline.core.stages.chunking import is_parsed, record_outcome
from lorechat_pipeline.core.stages.observation import load_catalog, read_entry
from lorechat_pipeline.core.storage import ObjectInfo, ObjectNotFound, ObjectStore

# Opens the shared parser pool for `n` documents in the background turn (see core/turns.py);
# yields None when `stop` was set before the pool became free.
OpenBackgroundParser = Callable[[int, threading.Event], AbstractContextManager[ParserPool | None]]


@dataclass
class ParseAheadReport:
    shard: str
    parsed: int = 0  # documents whose chunks (or rejection) were written
    chunked: list[tuple[str, str]] = field(default_factory=list)  # (document id, content fp)


def parse_ahead(
    source: ObjectStore,
    processed: ObjectStore,
    shard: str,
    objects: Iterable[ObjectInfo],
    *,
    shard_count: int,
    layout: ProcessedLayout,
    max_document_bytes: int,
    open_parser: OpenBackgroundParser,
    stop: threading.Event,
) -> ParseAheadReport:
    """Parse what the shard's next run will have to parse, given a listing of the source."""
    report = ParseAheadReport(shard)
    candidates = list(
        _candidates(
            objects,
            shard,
            shard_count,
            load_catalog(processed, shard),
            {
                d: e.content_fp
                for d, e in load_ledger(processed, layout.chunk_ledger(shard)).items()
            },
            max_document_bytes,
        )
    )
    prepare = functools.partial(_prepare, source, processed, shard, layout, max_document_bytes)
    feed = _JobFeed(candidates, prepare, stop)
    while not feed.exhausted and not stop.is_set():
        with open_parser(len(candidates), stop) as pool:
            if pool is None:
                break
            for doc_id, outcome in pool.map(feed.jobs(pool)):
                entry = feed.entries.pop(doc_id)
                recorded = record_outcome(processed, layout, entry, outcome, write_rejection=True)
                if recorded.status == CHUNKED:
                    report.chunked.append((entry.document_id, entry.content_fp))
                report.parsed += 1
    return report


class _JobFeed:
    """The candidates as parser jobs, across as many turns of the pool as it takes."""

    def __init__(
        self,
        candidates: list[tuple[ObjectInfo, ObjectInfo | None]],
        prepare: Callable[
            [tuple[ObjectInfo, ObjectInfo | None]], tuple[CatalogEntry, bytes] | None
        ],
        stop: threading.Event,
    ) -> None:
        self._remaining = iter(candidates)
        self._prepare = prepare
        self._stop = stop
        self.exhausted = not candidates
        self.entries: dict[str, CatalogEntry] = {}  # sent to the pool, outcome not yet recorded

    def jobs(self, pool: ParserPool) -> Iterator[tuple[str, bytes, str]]:
        """Jobs until the candidates run out, `stop` is set, or a foreground step waits for
        the pool (this turn ends; the next turn goes on where it stopped)."""
        while not self._stop.is_set() and not pool.turns.should_step_aside():
            candidate = next(self._remaining, None)
            if candidate is None:
                self.exhausted = True
                return
            job = self._prepare(candidate)
            if job is not None:
                entry, data = job
                self.entries[entry.document_id] = entry
                yield entry.document_id, data, posixpath.basename(entry.document)


def _candidates(
    objects: Iterable[ObjectInfo],
    shard: str,
    shard_count: int,
    catalog: dict[str, CatalogEntry],
    chunked_fps: dict[str, str],
    max_document_bytes: int,
) -> Iterator[tuple[ObjectInfo, ObjectInfo | None]]:
    """(document, sidecar) of what the shard's run will have to parse, by the listing."""
    listing = list_shard(objects, shard, shard_count)
    for key, info in sorted(listing.documents.items()):
        if info.size > max_document_bytes:
            continue  # its run quarantines it without reading it
        sidecar = listing.sidecars.get(key)
        known = catalog.get(key)
        settled = known is not None and (
            known.sidecar_error or chunked_fps.get(known.document_id) == known.content_fp
        )
        if known is not None and known.listed_unchanged(info, sidecar) and settled:
            continue
        yield info, sidecar


def _prepare(
    source: ObjectStore,
    processed: ObjectStore,
    shard: str,
    layout: ProcessedLayout,
    max_document_bytes: int,
    candidate: tuple[ObjectInfo, ObjectInfo | None],
) -> tuple[CatalogEntry, bytes] | None:
    """The catalog entry the shard's observation will record for these bytes, and the bytes;
    None when there is nothing to parse."""
    try:
        entry, data = read_entry(source, *candidate, shard, max_document_bytes)
    except ObjectNotFound:
        return None  # deleted since the listing: its run records that
    if data is None or entry.sidecar_error or is_parsed(processed, layout, entry):
        return None
    return entry, data

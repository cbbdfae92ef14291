"""The vector index on Upstash Vector, behind the same interface as LanceVectorIndex.

Layout in one Upstash index (one REST URL):
- one namespace per index version (`chunks_<model>_<digest>`, as LanceDB's table name, with an
  optional prefix per deployment); blue/green promotion points the alias at another namespace;
- vector id = chunk id (`{document_id}#{ordinal}-{digest}`), so a document's chunks are listed
  by the prefix `{document_id}#`; a write upserts the new chunks, then deletes the stale ones
  (at the end of its all_or_nothing block);
- chunk text in `data`, every other chunk column in `metadata` (None values left out);
- the reserved namespace `_lorechat` holds LoreChat's own records, each a vector with a fixed unit
  vector: `manifest/{namespace}` (the manifest JSON in `data`: the index carries its contract, as
  LanceDB's schema metadata does) and `object/{key}` (small documents such as the alias, through
  UpstashObjectStore, so the unchanged AliasStore works here). A version exists when its manifest
  record does; an empty version has no namespace yet (Upstash creates one on first upsert).

No dagster or unstructured import: the serving container reads the index with this module.
"""

import base64
import contextlib
import hashlib
import itertools
import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
import pyarrow as pa

from lorechat_pipeline.core.aliases import AliasStore
from lorechat_pipeline.core.backends.upstash_client import (
    MAX_DATA_BYTES,
    MAX_METADATA_BYTES,
    MAX_TOP_K,
    MAX_VECTORS_PER_REQUEST,
    UpstashError,
    UpstashRequestError,
    UpstashVectorClient,
)
from lorechat_pipeline.core.backends.upstash_filters import (
    And,
    Compare,
    In,
    Node,
    UpstashFilter,
    from_sql,
)
from lorechat_pipeline.core.manifest import IndexManifest, ManifestMismatch
from lorechat_pipeline.core.records import index_schema
from lorechat_pipeline.core.storage import ObjectInfo, ObjectNotFound, ObjectStore
from lorechat_pipeline.core.vector_index import IndexNotFound, SearchHit, WriteResult

logger = logging.getLogger(__name__)

SYSTEM_NAMESPACE = "_lorechat"
MANIFEST_PREFIX = "manifest/"
OBJECT_PREFIX = "object/"
# JSON for 1,000 vectors of 1,024 floats is ~20 MB: batches also stop at this many bytes.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
COLUMNS = [f.name for f in index_schema(1)]
METADATA_COLUMNS = [name for name in COLUMNS if name not in ("text", "vector")]
SPARSE_TOKEN = re.compile(r"\w+", re.UNICODE)
# Never a content fingerprint: a document reported with it differs from every ledger entry.
MIXED_VERSIONS = "(mixed versions)"


class KeywordSearchUnavailable(UpstashError):
    pass


@dataclass(frozen=True)
class QuarantinedChunk:
    chunk_id: str
    document_id: str
    reason: str


@dataclass(frozen=True)
class UpstashWriteResult(WriteResult):
    """WriteResult plus the chunks Upstash cannot hold (sent nowhere, reported here)."""

    quarantined: tuple[QuarantinedChunk, ...] = field(default_factory=tuple)


@dataclass
class _UpstashWrite:
    """An all-or-nothing write in progress. Only ids stay in memory: the records of the chunks
    it overwrote are put aside in a temporary file, so that a block of many calls holds one
    call's rows at a time."""

    # One JSON record a line: the chunks the block overwrote, as they were before it.
    put_aside_file: IO[str]
    put_aside_ids: set[str] = field(default_factory=set)
    # Chunks the block upserted that were not there before it: an undo deletes them.
    added: set[str] = field(default_factory=set)
    # Chunks the block's documents no longer have, deleted when the block ends (an ordered set).
    stale: dict[str, None] = field(default_factory=dict)

    def put_aside(self, record: dict[str, Any]) -> None:
        """Keep a chunk's record from before the block (at its first overwrite only)."""
        if record["id"] in self.put_aside_ids or record["id"] in self.added:
            return
        self.put_aside_file.write(json.dumps(record) + "\n")
        self.put_aside_ids.add(record["id"])

    def put_aside_records(self) -> Iterator[dict[str, Any]]:
        self.put_aside_file.seek(0)
        for line in self.put_aside_file:
            yield json.loads(line)


def missing_namespace(error: UpstashRequestError) -> bool:
    """A namespace nothing was written to yet does not exist: reading it reads nothing."""
    return error.status in (400, 404) and "namespace" in error.upstash_message.lower()


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _system_record(
    info: dict[str, Any], vector_id: str, metadata: dict[str, Any], data: str
) -> dict[str, Any]:
    """One of LoreChat's own records: every vector needs the index's dimension (a fixed unit
    vector: a zero vector has no cosine), and in a hybrid index a sparse vector as well."""
    record: dict[str, Any] = {
        "id": vector_id,
        "vector": [1.0] + [0.0] * (int(info["dimension"]) - 1),
        "metadata": metadata,
        "data": data,
    }
    if info.get("sparseIndex"):
        record["sparseVector"] = {"indices": [0], "values": [1.0]}
    return record


def sparse_terms(text: str) -> dict[str, list[Any]]:
    """Term frequencies over hashed lowercase words: Upstash weights them by IDF at query time."""
    counts = Counter(
        int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF
        for token in SPARSE_TOKEN.findall(text.lower())
    )
    indices = sorted(counts)
    return {"indices": indices, "values": [float(counts[i]) for i in indices]}


def cosine_from_score(score: float, similarity_function: str) -> float:
    """Upstash's normalised score back to the cosine LanceDB reports (for unit vectors)."""
    function = similarity_function.upper()
    if function in ("COSINE", "DOT_PRODUCT"):
        return 2.0 * score - 1.0  # score = (1 + cos) / 2
    if function == "EUCLIDEAN":
        squared = (1.0 / score - 1.0) if score > 0 else 4.0  # score = 1 / (1 + d²), d² = 2 - 2cos
        return 1.0 - squared / 2.0
    return score


class UpstashVectorIndex:
    def __init__(
        self,
        client: UpstashVectorClient,
        namespace: str,
        manifest: IndexManifest,
        info: dict[str, Any],
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_vectors_per_request: int = MAX_VECTORS_PER_REQUEST,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.manifest = manifest
        self.info = info
        self.max_request_bytes = max_request_bytes
        self.max_vectors_per_request = min(max_vectors_per_request, MAX_VECTORS_PER_REQUEST)
        self.schema = index_schema(manifest.embedding_dimension)
        self._write: _UpstashWrite | None = None

    def __repr__(self) -> str:
        return f"UpstashVectorIndex(url={self.client.credentials.url!r}, namespace={self.name!r})"

    @property
    def name(self) -> str:
        return self.namespace

    @property
    def uri(self) -> str:
        return f"{self.client.credentials.url}#{self.namespace}"

    @property
    def similarity_function(self) -> str:
        return str(self.info.get("similarityFunction", "COSINE"))

    @property
    def is_hybrid(self) -> bool:
        return bool(self.info.get("sparseIndex")) and bool(self.info.get("denseIndex", True))

    # -- opening, creating, dropping -----------------------------------------------------------

    @staticmethod
    def _check_index(info: dict[str, Any], manifest: IndexManifest, where: str) -> None:
        dimension = int(info.get("dimension") or 0)
        if info.get("sparseIndex") and not info.get("denseIndex", True):
            raise ManifestMismatch(f"{where} is a sparse-only index: LoreChat needs a dense one")
        if dimension != manifest.embedding_dimension:
            raise ManifestMismatch(
                f"the Upstash index at {where} holds {dimension}-d vectors; the configured "
                f"embedder {manifest.embedding_model} makes {manifest.embedding_dimension}-d "
                "ones. Create an Upstash index of that dimension (its dimension is fixed at "
                "creation) or configure the matching embedder."
            )
        function = str(info.get("similarityFunction", "COSINE")).upper()
        if function != "COSINE" and not manifest.normalized:
            raise ManifestMismatch(
                f"the Upstash index at {where} ranks by {function}, which matches cosine only "
                "for normalised vectors; create a COSINE index"
            )

    @classmethod
    def open_or_create(
        cls, client: UpstashVectorClient, manifest: IndexManifest, namespace: str | None = None
    ) -> "UpstashVectorIndex":
        """The version for writing; refuses one whose manifest differs from this configuration."""
        name = namespace or manifest.default_table_name()
        cls._check_namespace(name)
        stored = read_manifest(client, name)
        if stored is not None:
            return cls.open(client, name, expected=manifest)
        info = client.info()
        cls._check_index(info, manifest, client.credentials.url)
        metadata = {"kind": "manifest", "namespace": name, "created_at": _now()}
        record = _system_record(info, MANIFEST_PREFIX + name, metadata, manifest.to_json())
        client.upsert(SYSTEM_NAMESPACE, [record])
        return cls(client, name, manifest, info)

    @classmethod
    def open(
        cls,
        client: UpstashVectorClient,
        namespace: str,
        *,
        expected: IndexManifest | None = None,
        expected_embedder: IndexManifest | None = None,
    ) -> "UpstashVectorIndex":
        """As LanceVectorIndex.open: `expected` checks the whole manifest, `expected_embedder`
        only the embedder."""
        where = f"{client.credentials.url} namespace {namespace!r}"
        manifest = read_manifest(client, namespace)
        if manifest is None:
            raise IndexNotFound(f"no index version {namespace!r} at {client.credentials.url}")
        if expected is not None:
            expected.require_compatible(manifest, where)
        if expected_embedder is not None:
            expected_embedder.require_same_embedder(manifest, where)
        info = client.info()
        cls._check_index(info, manifest, client.credentials.url)
        return cls(client, namespace, manifest, info)

    @staticmethod
    def _check_namespace(name: str) -> None:
        if not name or name == SYSTEM_NAMESPACE:
            raise ValueError(f"{name!r} cannot name an index version (reserved)")

    @classmethod
    def table_names(cls, client: UpstashVectorClient) -> list[str]:
        """Every index version (those with a manifest record), as LanceVectorIndex.table_names."""
        return sorted(
            str(vector["id"])[len(MANIFEST_PREFIX) :]
            for vector in _system_scan(client, MANIFEST_PREFIX)
        )

    @classmethod
    def drop(cls, client: UpstashVectorClient, namespace: str) -> None:
        cls._check_namespace(namespace)
        if namespace in client.list_namespaces():
            client.delete_namespace(namespace)
        client.delete(SYSTEM_NAMESPACE, ids=[MANIFEST_PREFIX + namespace])

    # -- reading -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Nothing is cached between calls; kept for the interface."""

    def count(self, where: str | None = None) -> int:
        predicate = from_sql(where)
        if predicate.matches_nothing:
            return 0
        if where is None or not where.strip():
            namespaces = self.client.info().get("namespaces") or {}
            counts = namespaces.get(self.namespace) or {}
            return int(counts.get("vectorCount", 0)) + int(counts.get("pendingVectorCount", 0))
        # Upstash counts per namespace only: a predicate is checked on a metadata scan.
        return sum(1 for _ in self._scan(predicate))

    def _scan(
        self, predicate: UpstashFilter, *, data: bool = False, vectors: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Vectors matching the predicate: a range over the namespace, or only over the
        documents' id prefixes when the predicate pins document_id."""
        if predicate.matches_nothing:
            return
        documents = document_ids_of(predicate.node)
        prefixes = [f"{doc}#" for doc in documents] if documents is not None else [None]
        try:
            for prefix in prefixes:
                for vector in self.client.scan(
                    self.namespace,
                    prefix=prefix,
                    include_metadata=True,
                    include_data=data,
                    include_vectors=vectors,
                ):
                    if predicate.matches(vector.get("metadata") or {}):
                        yield vector
        except UpstashRequestError as error:
            if not missing_namespace(error):
                raise

    def _row(self, vector: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(METADATA_COLUMNS)
        row.update(vector.get("metadata") or {})
        row["chunk_id"] = str(vector["id"])
        row["text"] = vector.get("data")
        if "vector" in vector:
            row["vector"] = vector["vector"]
        return row

    def rows(self, where: str | None, columns: Sequence[str], limit: int | None = None) -> pa.Table:
        schema = pa.schema([self.schema.field(name) for name in columns])
        wanted = list(columns)
        scanned = self._scan(from_sql(where), data="text" in wanted, vectors="vector" in wanted)
        rows = [
            {name: row.get(name) for name in wanted}
            for row in itertools.islice(map(self._row, scanned), limit)
        ]
        return pa.Table.from_pylist(rows, schema=schema)

    def document_versions(self, shard: str) -> dict[str, str]:
        """document_id → content_fp of what the index holds for one shard; MIXED_VERSIONS for
        a document whose chunks disagree (a write that failed half-way), so it is replaced."""
        versions: dict[str, str] = {}
        for vector in self._scan(from_sql(None)):
            metadata = vector.get("metadata") or {}
            if metadata.get("shard") == shard:
                document, content_fp = str(metadata["document_id"]), str(metadata["content_fp"])
                if versions.setdefault(document, content_fp) != content_fp:
                    versions[document] = MIXED_VERSIONS
        return versions

    # -- writing -------------------------------------------------------------------------------

    def _vector(self, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The Upstash vector for an index row, or why it cannot be sent."""
        metadata = {
            name: row[name] for name in METADATA_COLUMNS if name in row and row[name] is not None
        }
        metadata.pop("chunk_id", None)
        text = row.get("text") or ""
        metadata_bytes = _json_bytes(metadata)
        if metadata_bytes > MAX_METADATA_BYTES:
            return None, (
                f"metadata is {metadata_bytes} bytes; Upstash Vector takes at most "
                f"{MAX_METADATA_BYTES} per vector (shorten the sidecar metadata, title or section)"
            )
        data_bytes = len(text.encode())
        if data_bytes > MAX_DATA_BYTES:
            return None, (
                f"text is {data_bytes} bytes; Upstash Vector's data field takes at most "
                f"{MAX_DATA_BYTES} per vector (lower the chunk size)"
            )
        vector = np.asarray(row["vector"], dtype=np.float32)
        if vector.shape != (self.manifest.embedding_dimension,) or not np.all(np.isfinite(vector)):
            return None, f"vector is not {self.manifest.embedding_dimension} finite floats"
        payload: dict[str, Any] = {
            "id": row["chunk_id"],
            "vector": vector.tolist(),
            "metadata": metadata,
            "data": text,
        }
        if self.is_hybrid:
            # A hybrid index takes a dense and a sparse vector in every upsert.
            payload["sparseVector"] = sparse_terms(text)
        return payload, None

    def _batches(self, vectors: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        size = 0
        for vector in vectors:
            vector_bytes = _json_bytes(vector)
            if batch and (
                len(batch) >= self.max_vectors_per_request
                or size + vector_bytes > self.max_request_bytes
            ):
                yield batch
                batch, size = [], 0
            batch.append(vector)
            size += vector_bytes
        if batch:
            yield batch

    def _delete_ids(self, ids: Sequence[str]) -> int:
        deleted = 0
        for start in range(0, len(ids), MAX_VECTORS_PER_REQUEST):
            try:
                deleted += self.client.delete(
                    self.namespace, ids=ids[start : start + MAX_VECTORS_PER_REQUEST]
                )
            except UpstashRequestError as error:
                if not missing_namespace(error):
                    raise
        return deleted

    def _stored_chunks(
        self, document_ids: Sequence[str], new_ids: set[str]
    ) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """The ids stored under the documents' prefixes, and the whole records of those the
        write will overwrite (so that an undo can put them back)."""
        stored: list[str] = []
        overwritten: dict[str, dict[str, Any]] = {}
        try:
            for doc in document_ids:
                for vector in self.client.scan(
                    self.namespace,
                    prefix=f"{doc}#",
                    include_metadata=True,
                    include_data=True,
                    include_vectors=True,
                ):
                    vector_id = str(vector["id"])
                    stored.append(vector_id)
                    if vector_id in new_ids:
                        overwritten[vector_id] = self._restorable(vector)
        except UpstashRequestError as error:
            if not missing_namespace(error):
                raise
        return stored, overwritten

    def _restorable(self, stored: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {"id": str(stored["id"]), "vector": stored["vector"]}
        for name in ("metadata", "data"):
            if stored.get(name) is not None:
                record[name] = stored[name]
        if self.is_hybrid:
            record["sparseVector"] = sparse_terms(stored.get("data") or "")
        return record

    def _undo(self, write: _UpstashWrite) -> None:
        """Best effort after a failed block: drop the chunks it added and put back the ones it
        overwrote (it deleted none yet). What fails here is logged; the block's own error is
        the one raised."""
        added = sorted(write.added)
        self._best_effort("delete the chunks it added", lambda: self._delete_ids(added))
        self._best_effort(
            "restore the chunks it overwrote",
            lambda: self._upsert_all(write.put_aside_records()),
        )

    def _best_effort(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as error:  # the write's own error is the one to raise
            # Client errors carry the URL and Upstash's message, never the token.
            logger.warning(
                "after a failed write to Upstash namespace %s, could not %s (%s: %s); the "
                "next run replaces the documents concerned",
                self.namespace,
                what,
                type(error).__name__,
                error,
            )

    def _upsert_all(self, vectors: Iterable[dict[str, Any]]) -> int:
        return sum(self._upsert(batch) for batch in self._batches(vectors))

    def _upsert(self, batch: list[dict[str, Any]]) -> int:
        """One batch; a body the service finds too large (413) is halved until it fits."""
        try:
            self.client.upsert(self.namespace, batch)
        except UpstashRequestError as error:
            if error.status != 413 or len(batch) == 1:
                raise
            middle = len(batch) // 2
            logger.warning("Upstash refused %d vectors as too large; halving", len(batch))
            return self._upsert(batch[:middle]) + self._upsert(batch[middle:])
        return len(batch)

    def replace_documents(self, rows: pa.Table, document_ids: Sequence[str]) -> UpstashWriteResult:
        """Make the index hold exactly `rows` for `document_ids` (none for ids absent in rows).

        Upstash has no transactions. The call lists what the documents hold and upserts every
        new chunk (chunk ids are content-addressed, so an unchanged chunk is overwritten in
        place); the stale ones (ids under `{document_id}#` not in the new set) are deleted when
        the call's all_or_nothing() block ends, a call outside a block being a block of its
        own. `deleted` counts those stale chunks. Chunks Upstash cannot hold are quarantined.
        """
        wanted = list(dict.fromkeys(document_ids))
        if not wanted:
            return UpstashWriteResult(0, 0)
        by_document: dict[str, list[dict[str, Any]]] = {doc: [] for doc in wanted}
        for row in rows.to_pylist():
            if row["document_id"] in by_document:
                by_document[row["document_id"]].append(row)
        quarantined: list[QuarantinedChunk] = []
        # A document's new chunks share one request when they fit, so they arrive together.
        requests: list[list[dict[str, Any]]] = [[]]
        for doc in wanted:
            vectors = []
            for row in by_document[doc]:
                vector, reason = self._vector(row)
                if vector is None:
                    assert reason is not None
                    quarantined.append(QuarantinedChunk(row["chunk_id"], doc, reason))
                    logger.warning("quarantined chunk %s: %s", row["chunk_id"], reason)
                else:
                    vectors.append(vector)
            if requests[-1] and len(requests[-1]) + len(vectors) > self.max_vectors_per_request:
                requests.append([])
            requests[-1].extend(vectors)
        new_ids = {vector["id"] for request in requests for vector in request}

        written = 0
        with self._all_or_nothing() as write:
            stored, overwritten = self._stored_chunks(wanted, new_ids)
            already_stored = set(stored)
            for request in requests:
                for batch in self._batches(request):
                    # Noted before the call: a failed or halved request may be partly applied.
                    for vector_id in (vector["id"] for vector in batch):
                        if vector_id in overwritten:
                            write.put_aside(overwritten[vector_id])
                        elif vector_id not in already_stored:
                            write.added.add(vector_id)
                        write.stale.pop(vector_id, None)
                    written += self._upsert(batch)
            stale = [vector_id for vector_id in stored if vector_id not in new_ids]
            write.stale.update(dict.fromkeys(stale))
        return UpstashWriteResult(written, len(stale), tuple(quarantined))

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Group replace_documents calls into one write, as far as Upstash allows:
        - each call upserts its new chunks as it goes; no chunk is deleted before the block
          ends, so a document is never absent (readers see a changed document's old and new
          chunks together until then);
        - when anything in the block raises (a call, after the client's retries, or the
          caller's code between calls), the block is undone best effort: the chunks it added
          are deleted and those it overwrote put back; what the undo cannot do is logged, and
          the document's chunks then disagree on content_fp, so document_versions reports it
          as MIXED_VERSIONS and the next run replaces it;
        - when the block ends, the stale chunks of its documents are deleted; a failure there
          leaves the new chunks and some old ones (MIXED_VERSIONS again), not undone, since
          an undo after deletes could leave a document absent.
        A block inside a block is part of the outer one."""
        with self._all_or_nothing():
            yield

    @contextlib.contextmanager
    def _all_or_nothing(self) -> Iterator[_UpstashWrite]:
        if self._write is not None:
            yield self._write
            return
        with tempfile.TemporaryFile("w+", encoding="utf-8") as put_aside_file:
            self._write = write = _UpstashWrite(put_aside_file)
            try:
                yield write
            except BaseException:  # an interrupted run gives up too
                self._undo(write)
                raise
            finally:
                self._write = None
        # Every upsert went in: only now may a chunk go.
        self._delete_ids(list(write.stale))

    def maintain(self, ann_index_min_rows: int, fold: bool = True) -> list[str]:
        """Upstash indexes every upsert itself: nothing to build or fold."""
        return []

    def has_unfolded_rows(self) -> bool:
        return False

    # -- searching -----------------------------------------------------------------------------

    def _query(self, body: dict[str, Any], k: int, where: str | None) -> list[dict[str, Any]]:
        if not 1 <= k <= MAX_TOP_K:
            raise ValueError(f"k must be between 1 and {MAX_TOP_K} on Upstash Vector")
        predicate = from_sql(where)
        if predicate.matches_nothing:
            return []
        body = {
            **body,
            "topK": k,
            "includeMetadata": True,
            "includeData": True,
            "includeVectors": False,
        }
        if predicate.text:
            body["filter"] = predicate.text
        try:
            return self.client.query(self.namespace, body)
        except UpstashRequestError as error:
            if missing_namespace(error):
                return []
            raise

    def _hits(self, results: list[dict[str, Any]], dense: bool) -> list[SearchHit]:
        hits = []
        for result in results:
            row = self._row(result)
            row.pop("vector", None)
            score = float(result["score"])
            hits.append(
                SearchHit(
                    chunk_id=row["chunk_id"],
                    document=row["document"],
                    score=cosine_from_score(score, self.similarity_function) if dense else score,
                    text=row["text"] or "",
                    row=row,
                )
            )
        return hits

    def search(self, vector: np.ndarray, k: int = 10, where: str | None = None) -> list[SearchHit]:
        """Dense search; scores are cosine similarities, as LanceVectorIndex.search reports."""
        body = {"vector": np.asarray(vector, dtype=np.float32).tolist()}
        return self._hits(self._query(body, k, where), dense=True)

    def _require_hybrid(self) -> None:
        if not self.is_hybrid:
            raise KeywordSearchUnavailable(
                "keyword and hybrid search on Upstash Vector need a hybrid index (dense + "
                "sparse); this one is dense-only. Use dense search, or create a hybrid index "
                "and re-ingest into it."
            )

    def keyword_search(self, text: str, k: int = 10, where: str | None = None) -> list[SearchHit]:
        """The sparse component only, BM25-like: term frequencies weighted by IDF."""
        self._require_hybrid()
        body = {"sparseVector": sparse_terms(text), "weightingStrategy": "IDF"}
        return self._hits(self._query(body, k, where), dense=False)

    def hybrid_search(
        self, vector: np.ndarray, text: str, k: int = 10, where: str | None = None
    ) -> list[SearchHit]:
        """Dense and sparse fused by Upstash with reciprocal rank fusion (scores are RRF's)."""
        self._require_hybrid()
        body = {
            "vector": np.asarray(vector, dtype=np.float32).tolist(),
            "sparseVector": sparse_terms(text),
            "weightingStrategy": "IDF",
            "fusionAlgorithm": "RRF",
        }
        return self._hits(self._query(body, k, where), dense=False)


def document_ids_of(node: Node) -> list[str] | None:
    """The document ids a predicate is limited to, when it says so (`document_id = ..`,
    `document_id IN (..)`, or either within an AND); None when it may match any document."""
    if isinstance(node, Compare) and node.field == "document_id" and node.op == "=":
        return [str(node.value)]
    if isinstance(node, In) and node.field == "document_id" and not node.negated:
        return list(dict.fromkeys(str(value) for value in node.values))
    if isinstance(node, And):
        for item in node.items:
            found = document_ids_of(item)
            if found is not None:
                return found
    return None


def _system_scan(client: UpstashVectorClient, prefix: str) -> list[dict[str, Any]]:
    try:
        return list(client.scan(SYSTEM_NAMESPACE, prefix=prefix))
    except UpstashRequestError as error:
        if missing_namespace(error):
            return []
        raise


def _system_fetch(client: UpstashVectorClient, vector_id: str) -> dict[str, Any] | None:
    try:
        found = client.fetch(SYSTEM_NAMESPACE, [vector_id], include_data=True)
    except UpstashRequestError as error:
        if missing_namespace(error):
            return None
        raise
    return found[0] if found else None


def read_manifest(client: UpstashVectorClient, namespace: str) -> IndexManifest | None:
    record = _system_fetch(client, MANIFEST_PREFIX + namespace)
    if record is None:
        return None
    raw = record.get("data")
    if not raw:
        raise ManifestMismatch(f"the manifest record of {namespace!r} on Upstash is empty")
    return IndexManifest.from_json(raw)


class UpstashObjectStore(ObjectStore):
    """Small documents (the alias) as records in the reserved namespace: one upsert per write,
    so a reader sees the old bytes or the new, never a torn document."""

    def __init__(self, client: UpstashVectorClient) -> None:
        self.client = client
        self._index_info: dict[str, Any] | None = None

    @property
    def uri(self) -> str:
        return f"{self.client.credentials.url}#{SYSTEM_NAMESPACE}"

    @property
    def index_info(self) -> dict[str, Any]:
        if self._index_info is None:
            self._index_info = self.client.info()
        return self._index_info

    @staticmethod
    def _info(key: str, metadata: dict[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=int(metadata.get("size", 0)),
            etag=str(metadata.get("etag", "")),
            version_id=None,
            last_modified=datetime.fromisoformat(str(metadata.get("modified", _now()))),
        )

    def list_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for vector in _system_scan(self.client, OBJECT_PREFIX + prefix):
            key = str(vector["id"])[len(OBJECT_PREFIX) :]
            yield self._info(key, vector.get("metadata") or {})

    def head(self, key: str) -> ObjectInfo | None:
        found = _system_fetch(self.client, OBJECT_PREFIX + key)
        return None if found is None else self._info(key, found.get("metadata") or {})

    def read(self, key: str) -> bytes:
        found = _system_fetch(self.client, OBJECT_PREFIX + key)
        if found is None:
            raise ObjectNotFound(key)
        return base64.b64decode(found.get("data") or "")

    def write(self, key: str, data: bytes) -> None:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key: {key!r}")
        metadata = {
            "kind": "object",
            "size": len(data),
            "etag": hashlib.sha256(data).hexdigest(),
            "modified": _now(),
        }
        encoded = base64.b64encode(data).decode()
        record = _system_record(self.index_info, OBJECT_PREFIX + key, metadata, encoded)
        self.client.upsert(SYSTEM_NAMESPACE, [record])

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.client.delete(SYSTEM_NAMESPACE, ids=[OBJECT_PREFIX + key for key in keys])


def upstash_aliases(client: UpstashVectorClient) -> AliasStore:
    """The alias (which namespace searches read), kept in the reserved namespace."""
    return AliasStore(UpstashObjectStore(client))

"""The vector index on LanceDB: opened through its manifest, written per document atomically.

No dagster or unstructured import here: the serving container reads the index with this module.
"""

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from lorechat_pipeline.core.manifest import MANIFEST_METADATA_KEY, IndexManifest, ManifestMismatch
from lorechat_pipeline.core.records import index_schema

logger = logging.getLogger(__name__)

# How the full-text index analyses words: English stemming and stop words, lower case, accents
# folded. LanceDB's defaults today, spelled out so that maintain() rebuilds an index analysed
# otherwise. On SciFact (809 train queries) stemming is worth +0.035 keyword / +0.02 hybrid
# nDCG@10 and stop-word removal +0.01 keyword (docs/benchmarks.md).
FULL_TEXT_ANALYSIS: dict[str, Any] = {
    "base_tokenizer": "simple",
    "language": "English",
    "lower_case": True,
    "stem": True,
    "remove_stop_words": True,
    "ascii_folding": True,
}

# Per-commit bound on documents replaced together: each commit stays atomic per document while
# a huge first ingest does not build one giant transaction.
DOCUMENTS_PER_COMMIT = 500


def lance_storage_options(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
) -> dict[str, str]:
    """LanceDB's options for a table on S3 (or an S3-compatible endpoint); none for a folder."""
    if not uri.startswith("s3://"):
        return {}
    options = {
        "region": region,
        "endpoint": endpoint_url,
        "aws_access_key_id": aws_access_key_id,
        "aws_secret_access_key": aws_secret_access_key,
        "allow_http": "true" if (endpoint_url or "").startswith("http://") else None,
    }
    return {name: value for name, value in options.items() if value}


class IndexNotFound(RuntimeError):
    pass


def sql_string(value: str) -> str:
    """A SQL string literal (single quotes: double quotes name columns in LanceDB SQL)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    document: str
    score: float
    text: str
    row: dict[str, Any]


@dataclass(frozen=True)
class WriteResult:
    written: int
    deleted: int


@dataclass
class _LanceWrite:
    """An all-or-nothing write in progress: the table's version before it, and the versions
    its own commits made."""

    version_before: int
    committed: list[int] = field(default_factory=list)


class LanceVectorIndex:
    def __init__(self, table: Any, manifest: IndexManifest, uri: str) -> None:
        self.table = table
        self.manifest = manifest
        self.uri = uri
        self._write: _LanceWrite | None = None

    @property
    def name(self) -> str:
        return str(self.table.name)

    @staticmethod
    def connect(uri: str, storage_options: dict[str, str] | None = None) -> Any:
        return lancedb.connect(uri, storage_options=storage_options or None)

    @classmethod
    def open_or_create(
        cls,
        uri: str,
        manifest: IndexManifest,
        table_name: str | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> "LanceVectorIndex":
        """The table for writing; refuses one whose manifest differs from this configuration."""
        db = cls.connect(uri, storage_options)
        name = table_name or manifest.default_table_name()
        if name in db.list_tables().tables:
            index = cls.open(uri, name, storage_options=storage_options)
            manifest.require_compatible(index.manifest, f"{uri}/{name}")
            return index
        schema = index_schema(
            manifest.embedding_dimension, {MANIFEST_METADATA_KEY: manifest.to_json().encode()}
        )
        try:
            table = db.create_table(name, schema=schema)
        except ValueError:
            # Another writer created it first: fine, open theirs (and check it).
            return cls.open_or_create(uri, manifest, name, storage_options)
        return cls(table, manifest, uri)

    @classmethod
    def open(
        cls,
        uri: str,
        table_name: str,
        *,
        expected: IndexManifest | None = None,
        expected_embedder: IndexManifest | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> "LanceVectorIndex":
        """`expected`: the whole manifest must match (writing); `expected_embedder`: only the
        embedder (reading, where the chunker that made the rows does not matter)."""
        db = cls.connect(uri, storage_options)
        if table_name not in db.list_tables().tables:
            raise IndexNotFound(f"no index table {table_name!r} at {uri}: run `lorechat ingest`")
        table = db.open_table(table_name)
        raw = (table.schema.metadata or {}).get(MANIFEST_METADATA_KEY)
        if raw is None:
            raise ManifestMismatch(f"table {table_name!r} at {uri} carries no LoreChat manifest")
        manifest = IndexManifest.from_json(raw)
        if expected is not None:
            expected.require_compatible(manifest, f"{uri}/{table_name}")
        if expected_embedder is not None:
            expected_embedder.require_same_embedder(manifest, f"{uri}/{table_name}")
        return cls(table, manifest, uri)

    @classmethod
    def table_names(cls, uri: str, storage_options: dict[str, str] | None = None) -> list[str]:
        return list(cls.connect(uri, storage_options).list_tables().tables)

    @classmethod
    def drop(cls, uri: str, table_name: str, storage_options: dict[str, str] | None = None) -> None:
        cls.connect(uri, storage_options).drop_table(table_name, ignore_missing=True)

    def refresh(self) -> None:
        self.table.checkout_latest()

    def count(self, where: str | None = None) -> int:
        return int(self.table.count_rows(where))

    def rows(self, where: str | None, columns: Sequence[str], limit: int | None = None) -> pa.Table:
        query = self.table.search().select(list(columns)).limit(limit)
        if where:
            query = query.where(where)
        result: pa.Table = query.to_arrow()
        return result

    def document_versions(self, shard: str) -> dict[str, str]:
        """document_id → content_fp of what the index holds for one shard."""
        table = self.rows(f"shard = {sql_string(shard)}", ["document_id", "content_fp"])
        return dict(
            zip(
                table.column("document_id").to_pylist(),
                table.column("content_fp").to_pylist(),
                strict=True,
            )
        )

    def replace_documents(self, rows: pa.Table, document_ids: Sequence[str]) -> WriteResult:
        """Make the index hold exactly `rows` for `document_ids` (none for ids absent in rows).

        One merge-insert per DOCUMENTS_PER_COMMIT documents: readers see each document's old
        chunk set or its new one, never both and never neither. The call is all-or-nothing, or
        part of the enclosing all_or_nothing() block.
        """
        if not document_ids:
            return WriteResult(0, 0)
        rows = rows.cast(self.table.schema)
        written = deleted = 0
        wanted = list(dict.fromkeys(document_ids))
        with self._all_or_nothing() as write:
            for start in range(0, len(wanted), DOCUMENTS_PER_COMMIT):
                batch_ids = wanted[start : start + DOCUMENTS_PER_COMMIT]
                batch_rows = rows.filter(pa.compute.is_in(rows["document_id"], pa.array(batch_ids)))
                result = self._commit(batch_rows, batch_ids)
                write.committed.append(int(result.version))
                written += int(result.num_inserted_rows) + int(result.num_updated_rows)
                deleted += int(result.num_deleted_rows)
        return WriteResult(written, deleted)

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Every replace_documents call in the block commits as it goes; when anything in the
        block raises (a call, or the caller's code between calls), the table is restored to its
        version before the block (a new version with that content), unless another writer
        committed in between: restoring would drop their commit, so the block's commits stay
        (each document whole, old or new), which is logged. Readers may briefly see the
        commits that are undone. A block inside a block is part of the outer one."""
        with self._all_or_nothing():
            yield

    @contextlib.contextmanager
    def _all_or_nothing(self) -> Iterator[_LanceWrite]:
        if self._write is not None:
            yield self._write
            return
        self.table.checkout_latest()
        self._write = write = _LanceWrite(int(self.table.version))
        try:
            yield write
        except BaseException:  # an interrupted run gives up too
            if write.committed:
                self._undo(write.version_before, write.committed)
            raise
        finally:
            self._write = None

    def _commit(self, batch_rows: pa.Table, batch_ids: list[str]) -> Any:
        return (
            self.table.merge_insert("chunk_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(sql_in("document_id", batch_ids))
            .execute(batch_rows)
        )

    def _undo(self, version_before: int, committed: list[int]) -> None:
        """Restore `version_before` when every version since is the block's own (`committed`);
        restoring over another writer's commit would silently drop it."""
        try:
            self.table.checkout_latest()
            since = sorted(
                int(entry["version"])
                for entry in self.table.list_versions()
                if int(entry["version"]) > version_before
            )
            if since != sorted(committed):
                logger.warning(
                    "not rolling %s back to version %d: versions %s since include another "
                    "writer's; this write's commits stay (each document whole, old or new) and "
                    "the next run writes the rest",
                    self.name,
                    version_before,
                    since,
                )
                return
            self.table.restore(version_before)
            logger.warning(
                "rolled %s back to version %d after a failed write (it undid versions %s)",
                self.name,
                version_before,
                since,
            )
        except Exception as error:  # the write's own error is the one to report
            logger.warning(
                "could not roll %s back to version %d (%s: %s); this write's commits stay "
                "(each document whole, old or new) and the next run writes the rest",
                self.name,
                version_before,
                type(error).__name__,
                error,
            )

    def search(self, vector: np.ndarray, k: int = 10, where: str | None = None) -> list[SearchHit]:
        query = self.table.search(vector.astype(np.float32), vector_column_name="vector")
        query = query.distance_type("cosine").limit(k)
        if where:
            query = query.where(where, prefilter=True)
        hits = []
        for row in query.to_arrow().drop_columns(["vector"]).to_pylist():
            distance = float(row.pop("_distance"))
            hits.append(
                SearchHit(
                    chunk_id=row["chunk_id"],
                    document=row["document"],
                    score=1.0 - distance,
                    text=row["text"],
                    row=row,
                )
            )
        return hits

    def maintain(self, ann_index_min_rows: int, fold: bool = True) -> list[str]:
        """Keep search fast as the table grows: scalar, full-text and (when large) ANN indexes,
        a full-text index rebuilt when it lacks the analysis defined here; with `fold`, rows
        written since are folded into the indexes and small fragments compacted (without, they
        are searched by a scan beside the indexes until a later call folds them)."""
        done: list[str] = []
        existing = {index.name: index for index in self.table.list_indices()}
        rows = self.count()
        if rows == 0:
            return done
        for column in ("document_id", "shard"):
            if f"{column}_idx" not in existing:
                self.table.create_scalar_index(column, index_type="BTREE")
                done.append(f"btree({column})")
        found = existing.get("text_idx")
        details = getattr(found, "index_details", None)  # None: analysis not reported
        if found is None or (
            isinstance(details, dict)
            and any(details.get(key) != value for key, value in FULL_TEXT_ANALYSIS.items())
        ):
            self.table.create_fts_index("text", replace=True, **FULL_TEXT_ANALYSIS)
            done.append("fts(text)")
        if "vector_idx" not in existing and rows >= ann_index_min_rows:
            # IVF_FLAT: exact within partitions (recall 1.0 here); IVF_PQ lost too much on 384-d.
            self.table.create_index(
                metric="cosine", index_type="IVF_FLAT", num_partitions=max(1, int(rows**0.5) // 4)
            )
            done.append("ivf_flat(vector)")
        if fold:
            self.table.optimize()
        return done

    def has_unfolded_rows(self) -> bool:
        """Rows an index does not cover yet (written by runs that left the folding to a later
        one)."""
        for index in self.table.list_indices():
            stats = self.table.index_stats(index.name)
            if stats is not None and stats.num_unindexed_rows > 0:
                return True
        return False

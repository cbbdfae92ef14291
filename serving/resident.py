"""The served version's vectors held in memory, for dense search without LanceDB's per-query cost.

LanceDB answers a vector query in ~10 ms at 100k chunks on this CPU whatever it probes: planning,
reading and Arrow plumbing per query. The same ranking over vectors already in memory takes a
fraction of a millisecond, so the serving container keeps a copy of the version it serves (within
a memory budget) and LanceDB answers what the copy cannot: filtered searches, versions too large
for the budget, and the seconds while a new version's copy is built in the background.

The ranking is cosine similarity, the index's metric. Up to `EXACT_SEARCH_ROWS` rows every vector
is scored (exact); above, the rows are grouped by spherical k-means into about √n lists and a
query scores the lists whose centroids are nearest to it (an inverted file, as LanceDB's IVF does).
"""

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lorechat_pipeline.core.memory import release_unused_memory
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from serving.keywords import KeywordIndex

logger = logging.getLogger(__name__)

EXACT_SEARCH_ROWS = 20_000
# Share of the lists a query scores: recall@10 against exact search of ≥ 0.99 on the serving
# benchmark and on SciFact's corpus at 1/16.
DEFAULT_PROBE_SHARE = 1 / 16
KMEANS_ITERATIONS = 8
KMEANS_SAMPLE_PER_LIST = 64


@dataclass(frozen=True)
class ResidentHit:
    row: int
    score: float


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def spherical_kmeans(
    vectors: np.ndarray, lists: int, seed: int = 0, iterations: int = KMEANS_ITERATIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (unit length) and each vector's list, trained on a sample of the vectors."""
    rng = np.random.default_rng(seed)
    sample_size = min(len(vectors), lists * KMEANS_SAMPLE_PER_LIST)
    sample = vectors[rng.choice(len(vectors), sample_size, replace=False)]
    centroids = sample[rng.choice(sample_size, lists, replace=False)].copy()
    for _ in range(iterations):
        assignment = np.argmax(sample @ centroids.T, axis=1)
        order = np.argsort(assignment, kind="stable")
        members, starts = np.unique(assignment[order], return_index=True)
        # A list that lost every member keeps its centroid rather than collapsing to zero.
        centroids[members] = _unit(np.add.reduceat(sample[order], starts, axis=0))
    assignment = np.concatenate(
        [
            np.argmax(vectors[start : start + 16_384] @ centroids.T, axis=1)
            for start in range(0, len(vectors), 16_384)
        ]
    )
    return centroids, assignment


class ResidentVectors:
    """One index version's vectors, sorted by list, beside the columns a search result shows."""

    def __init__(
        self,
        key: tuple[str, int],
        vectors: np.ndarray,
        rows: pa.Table,
        *,
        probe_share: float = DEFAULT_PROBE_SHARE,
        exact_rows: int = EXACT_SEARCH_ROWS,
    ) -> None:
        self.key = key
        self.size = len(vectors)
        vectors = _unit(np.ascontiguousarray(vectors, dtype=np.float32))
        self.centroids: np.ndarray | None = None
        self.bounds = np.array([0, self.size])
        if self.size > exact_rows:
            lists = max(2, round(math.sqrt(self.size)))
            self.centroids, assignment = spherical_kmeans(vectors, lists)
            order = np.argsort(assignment, kind="stable")
            vectors, rows = vectors[order], rows.take(pa.array(order))
            self.bounds = np.searchsorted(assignment[order], np.arange(lists + 1))
        self.probes = (
            1 if self.centroids is None else max(1, math.ceil(len(self.centroids) * probe_share))
        )
        self.vectors = vectors
        self.row_numbers = np.arange(self.size)
        self.rows = rows
        # Each row's place in chunk id order: ties between equal scores are broken by chunk id
        # (as LanceDB-backed fusion does) without reading the ids of every candidate.
        self.chunk_id_ranks = np.empty(self.size, dtype=np.int32)
        id_order = pc.sort_indices(rows.column("chunk_id")).to_numpy()
        self.chunk_id_ranks[id_order] = np.arange(self.size, dtype=np.int32)
        collections = rows.column("collection").to_pylist()
        self.collection_names = sorted(set(collections))
        codes = {name: code for code, name in enumerate(self.collection_names)}
        self.collection_codes = np.array([codes[name] for name in collections], dtype=np.int32)
        # Full-text search from memory too, when the rows carry the chunks' text.
        self.keywords = (
            KeywordIndex(rows.column("text").to_pylist()) if "text" in rows.column_names else None
        )

    @property
    def nbytes(self) -> int:
        keywords = self.keywords.nbytes if self.keywords is not None else 0
        return int(self.vectors.nbytes + self.rows.nbytes + self.chunk_id_ranks.nbytes + keywords)

    def _allowed(self, collections: Sequence[str] | None) -> list[int] | None:
        """Codes of the collections a hit may be in; None when every row qualifies."""
        if collections is None:
            return None
        wanted = set(collections)
        allowed = [code for code, name in enumerate(self.collection_names) if name in wanted]
        return None if len(allowed) == len(self.collection_names) else allowed

    def _candidates(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers of the rows in the lists nearest to the query."""
        if self.centroids is None:
            return self.vectors @ query, self.row_numbers
        closeness = self.centroids @ query
        probed = np.argpartition(-closeness, self.probes - 1)[: self.probes]
        starts, ends = self.bounds[probed], self.bounds[probed + 1]
        spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
        scores = [self.vectors[start:end] @ query for start, end in spans]
        rows = [self.row_numbers[start:end] for start, end in spans]
        return np.concatenate(scores), np.concatenate(rows)

    def search(
        self, query: np.ndarray, k: int, collections: Sequence[str] | None = None
    ) -> list[ResidentHit] | None:
        """The k rows most similar to the query, best first; None when the probed lists hold
        fewer than k rows of the allowed collections (the caller then asks LanceDB, which can
        probe wider under a filter)."""
        query = _unit(np.asarray(query, dtype=np.float32).reshape(-1))
        scores, rows = self._candidates(query)
        allowed = self._allowed(collections)
        if allowed is not None:
            keep = np.isin(self.collection_codes[rows], allowed)
            scores, rows = scores[keep], rows[keep]
        if len(rows) < min(k, self.size):
            return None
        if len(rows) > k:
            best = np.argpartition(-scores, k - 1)[:k]
            scores, rows = scores[best], rows[best]
        order = np.lexsort((rows, -scores))
        return [ResidentHit(int(rows[i]), float(scores[i])) for i in order]

    def keyword_search(
        self, text: str, k: int, collections: Sequence[str] | None = None
    ) -> list[ResidentHit] | None:
        """The k rows best matching `text` by BM25, best first, as LanceDB's full-text search
        ranks them; None when this copy has no keyword index."""
        if self.keywords is None:
            return None
        allowed = self._allowed(collections)
        mask = None if allowed is None else np.isin(self.collection_codes, allowed)
        scores, rows = self.keywords.search(text, k, mask)
        return [
            ResidentHit(int(row), float(score)) for row, score in zip(rows, scores, strict=True)
        ]

    def result_rows(self, hits: Sequence[ResidentHit]) -> list[dict[str, Any]]:
        taken = self.rows.take(pa.array([hit.row for hit in hits], type=pa.int64()))
        result: list[dict[str, Any]] = taken.to_pylist()
        return result


def vectors_of(table: pa.Table, column: str = "vector") -> np.ndarray:
    values = table.column(column).combine_chunks()
    dimension = values.type.list_size
    return np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(
        -1, dimension
    )


class ResidentIndex:
    """Keeps a resident copy of the version being served, rebuilt in the background whenever the
    served table or its version changes; `current()` gives it only while it matches."""

    def __init__(self, budget_bytes: int, columns: Sequence[str]) -> None:
        self.budget_bytes = budget_bytes
        self.columns = list(columns)
        self._lock = threading.Lock()
        # The version each recently tracked table should be copied at; the last one tracked
        # is the newest. Two tables at most: the one served and the one about to be.
        self._wanted: dict[str, int] = {}
        self._building: tuple[str, int] | None = None
        self._resident: ResidentVectors | None = None
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resident-vectors")
        self._refused: set[tuple[str, int]] = set()

    def track(self, index: LanceVectorIndex) -> None:
        """Called when a version is opened or refreshed: (re)build the copy if it is stale."""
        if self.budget_bytes <= 0:
            return
        key = (index.name, int(index.table.version))
        with self._lock:
            self._wanted.pop(key[0], None)
            self._wanted[key[0]] = key[1]
            while len(self._wanted) > 2:
                del self._wanted[next(iter(self._wanted))]
            resident = self._resident
            if (resident is not None and resident.key == key) or self._building == key:
                return
            if key in self._refused:
                return
            self._building = key
        self._builder.submit(self._build, index, key)

    def copy_of(self, table: str) -> ResidentVectors | None:
        """The copy of `table`, if it is built at the version last tracked for it."""
        resident = self._resident
        if resident is None or resident.key[0] != table:
            return None
        return resident if self._wanted.get(table) == resident.key[1] else None

    def current(self) -> ResidentVectors | None:
        """The copy of the table tracked last, if it is up to date."""
        wanted = self._wanted
        return self.copy_of(next(reversed(wanted))) if wanted else None

    def building(self, table: str) -> bool:
        """Whether a copy of `table` is being built now (false once built, refused or failed)."""
        building = self._building
        return building is not None and building[0] == table

    def wait_until_built(self, timeout: float) -> bool:
        """For benchmarks and tests: block until the copy matches the served version."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.current() is not None:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._builder.shutdown(wait=False, cancel_futures=True)

    def _build(self, index: LanceVectorIndex, key: tuple[str, int]) -> None:
        try:
            rows = index.count()
            vector_bytes = rows * index.manifest.embedding_dimension * 4
            if vector_bytes > self.budget_bytes:
                logger.info(
                    "index version %s: %d rows need %d MB of vectors, over the resident budget "
                    "of %d MB (LORECHAT_RESIDENT_VECTORS_MB); LanceDB answers every search",
                    key[0],
                    rows,
                    vector_bytes // 2**20,
                    self.budget_bytes // 2**20,
                )
                with self._lock:
                    self._refused.add(key)
                return
            started = time.perf_counter()
            data = index.rows(None, [*self.columns, "vector"])
            if int(index.table.version) != key[1]:
                return  # refreshed while reading: the next track() builds the newer version
            resident = ResidentVectors(key, vectors_of(data), data.drop_columns(["vector"]))
            del data
            with self._lock:
                self._resident = resident
            # The build's intermediate copies and the superseded version's copy are freed now;
            # without handing them back, each new version left ~300 MB more resident.
            release_unused_memory()
            logger.info(
                "index version %s@%d resident: %d rows, %d lists, %d MB, built in %.1f s",
                key[0],
                key[1],
                resident.size,
                len(resident.bounds) - 1,
                resident.nbytes // 2**20,
                time.perf_counter() - started,
            )
        except Exception:  # the copy is an accelerator: LanceDB keeps answering without it
            logger.exception("could not build the resident copy of %s", key[0])
        finally:
            with self._lock:
                if self._building == key:
                    self._building = None

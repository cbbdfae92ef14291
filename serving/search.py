"""Dense, keyword and hybrid retrieval over one index version, with metadata filters.

Hybrid fuses the dense and full-text rankings by reciprocal rank fusion (RRF): robust to the two
scores living on different scales, and no weights to tune per corpus.
"""

import asyncio
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from lorechat_pipeline.core.backends.upstash_index import (
    KeywordSearchUnavailable,
    UpstashVectorIndex,
)
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.vector_index import LanceVectorIndex, SearchHit, sql_string
from serving.query_encoder import QueryBatcher
from serving.resident import ResidentHit, ResidentVectors

RRF_K = 60
Key = TypeVar("Key", bound=Hashable)
# Columns a filter may name, with their type; everything else is refused with a 4xx.
FILTERABLE: dict[str, type] = {
    "document": str,
    "collection": str,
    "title": str,
    "section": str,
    "content_type": str,
    "source_version": str,
    "page_number": int,
    "ordinal": int,
}
RESULT_COLUMNS = [
    "chunk_id",
    "document",
    "collection",
    "source_version",
    "text",
    "title",
    "page_number",
    "section",
    "user_metadata",
]


# Of ~80 IVF partitions at 100k chunks, 8 gave recall@10 of 1.0 against exact search on the
# serving benchmark at 60% of the default's (20) latency; LORECHAT_SEARCH_NPROBES overrides it.
DEFAULT_NPROBES = 8
_hybrid_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="keyword-search")


class SearchMode(StrEnum):
    DENSE = "dense"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


class InvalidFilter(ValueError):
    pass


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    score: float
    row: dict[str, Any]


def _literal(field: str, value: object) -> str:
    expected = FILTERABLE[field]
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidFilter(f"filter on {field!r} takes integers, got {value!r}")
        return str(value)
    if not isinstance(value, str):
        raise InvalidFilter(f"filter on {field!r} takes strings, got {value!r}")
    return sql_string(value)


RANGE_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def filter_sql(filters: Mapping[str, Any] | None, collections: Sequence[str] | None) -> str | None:
    """A SQL predicate from `{field: value | {"in": [...]} | {"gte": x, "lt": y, ...}}`.

    Values become quoted literals of the column's type; field names come from a fixed list, so a
    request can never inject SQL.
    """
    clauses: list[str] = []
    for field, condition in (filters or {}).items():
        if field not in FILTERABLE:
            raise InvalidFilter(
                f"cannot filter on {field!r}; filterable fields: {', '.join(sorted(FILTERABLE))}"
            )
        if isinstance(condition, Mapping):
            if not condition:
                raise InvalidFilter(f"empty condition for {field!r}")
            for operator, operand in condition.items():
                if operator == "in":
                    if not isinstance(operand, list) or not operand:
                        raise InvalidFilter(f"'in' on {field!r} takes a non-empty list")
                    values = ", ".join(_literal(field, v) for v in operand)
                    clauses.append(f"{field} IN ({values})")
                elif operator in RANGE_OPERATORS:
                    clauses.append(
                        f"{field} {RANGE_OPERATORS[operator]} {_literal(field, operand)}"
                    )
                else:
                    raise InvalidFilter(
                        f"unknown operator {operator!r} on {field!r}; use in, gt, gte, lt, lte"
                    )
        else:
            clauses.append(f"{field} = {_literal(field, condition)}")
    if collections is not None:
        clauses.append(
            "collection IN (" + ", ".join(sql_string(c) for c in collections) + ")"
            if collections
            else "FALSE"
        )
    return " AND ".join(f"({clause})" for clause in clauses) or None


def dense(
    index: LanceVectorIndex,
    vector: np.ndarray,
    k: int,
    where: str | None,
    *,
    nprobes: int = DEFAULT_NPROBES,
) -> list[Hit]:
    query = index.table.search(vector.astype(np.float32), vector_column_name="vector")
    query = query.distance_type("cosine").select([*RESULT_COLUMNS, "_distance"]).limit(k)
    # IVF partitions probed: a few suffice for the nearest neighbours. A filter may leave too
    # few candidates in them, so filtered searches may probe more (that costs ~2.5× even when
    # unneeded, hence only then).
    query = query.nprobes(nprobes)
    if where:
        query = query.maximum_nprobes(nprobes * 8)
        query = query.where(where, prefilter=True)
    rows = query.to_arrow().to_pylist()
    return [Hit(row["chunk_id"], 1.0 - float(row.pop("_distance")), row) for row in rows]


def _hydrate(resident: ResidentVectors, found: list[ResidentHit]) -> list[Hit]:
    rows = resident.result_rows(found)
    return [Hit(row["chunk_id"], hit.score, row) for hit, row in zip(found, rows, strict=True)]


def _resident_hits(resident: ResidentVectors, found: list[ResidentHit] | None) -> list[Hit] | None:
    return None if found is None else _hydrate(resident, found)


def resident_dense(
    resident: ResidentVectors, vector: np.ndarray, k: int, collections: Sequence[str] | None
) -> list[Hit] | None:
    return _resident_hits(resident, resident.search(vector, k, collections))


def resident_keyword(
    resident: ResidentVectors, text: str, k: int, collections: Sequence[str] | None
) -> list[Hit] | None:
    return _resident_hits(resident, resident.keyword_search(text, k, collections))


def keyword(index: LanceVectorIndex, text: str, k: int, where: str | None) -> list[Hit]:
    query = index.table.search(text, query_type="fts").select([*RESULT_COLUMNS, "_score"]).limit(k)
    if where:
        query = query.where(where, prefilter=True)
    rows = query.to_arrow().to_pylist()
    return [Hit(row["chunk_id"], float(row.pop("_score")), row) for row in rows]


def fusion_depth(k: int) -> int:
    """How deep each ranking goes before fusion: deeper than returned, as RRF needs overlap."""
    return max(k * 4, 20)


def rrf_scores(rankings: Iterable[Iterable[Key]]) -> dict[Key, float]:
    """Each item's reciprocal rank fusion score over the rankings it appears in."""
    scores: dict[Key, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return scores


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    scores = rrf_scores([hit.chunk_id for hit in ranking] for ranking in rankings)
    rows: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for hit in ranking:
            rows.setdefault(hit.chunk_id, hit.row)
    best = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
    return [Hit(chunk_id, scores[chunk_id], rows[chunk_id]) for chunk_id in best]


def fuse_resident(
    rankings: Sequence[Sequence[ResidentHit]], k: int, resident: ResidentVectors
) -> list[ResidentHit]:
    """reciprocal_rank_fusion over rows of the copy: the same scores and order (ties by chunk
    id), without building the rows of hits that are not returned."""
    scores = rrf_scores([hit.row for hit in ranking] for ranking in rankings)
    id_ranks = resident.chunk_id_ranks
    best = sorted(scores, key=lambda row: (-scores[row], id_ranks[row]))[:k]
    return [ResidentHit(row, scores[row]) for row in best]


def search(
    index: VectorIndex,
    mode: SearchMode,
    text: str,
    query_vector: np.ndarray | Callable[[], np.ndarray] | None,
    k: int,
    where: str | None,
    *,
    nprobes: int = DEFAULT_NPROBES,
    resident: ResidentVectors | None = None,
    collections: Sequence[str] | None = None,
) -> list[Hit]:
    """`query_vector`: the query's embedding, or a function making it (called only when needed,
    and for hybrid search while the full-text search already runs).

    `resident`: the served version's in-memory copy, which answers dense and keyword searches
    whose only filter is the caller's collection scope (`collections`, already part of
    `where`)."""

    def embedded() -> np.ndarray:
        assert query_vector is not None
        return query_vector() if callable(query_vector) else query_vector

    if isinstance(index, UpstashVectorIndex):
        vector = None if mode is SearchMode.KEYWORD else embedded()
        return upstash_search(index, mode, text, vector, k, where)
    assert isinstance(index, LanceVectorIndex)
    if mode is SearchMode.KEYWORD:
        found = None if resident is None else resident_keyword(resident, text, k, collections)
        return found if found is not None else keyword(index, text, k, where)

    def dense_ranking(vector: np.ndarray, depth: int) -> list[Hit]:
        if resident is not None:
            hits = resident_dense(resident, vector, depth, collections)
            if hits is not None:
                return hits
        return dense(index, vector, depth, where, nprobes=nprobes)

    if mode is SearchMode.DENSE:
        return dense_ranking(embedded(), k)
    depth = fusion_depth(k)
    keyword_found = None if resident is None else resident.keyword_search(text, depth, collections)
    if resident is not None and keyword_found is not None:
        vector = embedded()
        dense_found = resident.search(vector, depth, collections)
        if dense_found is not None:
            # Both rankings from the copy: fused on row numbers, and only the k rows returned
            # are turned into results (not both lists' rows).
            return _hydrate(resident, fuse_resident([dense_found, keyword_found], k, resident))
        # Too few rows of the scope in the probed lists: LanceDB ranks the dense half.
        dense_hits = dense(index, vector, depth, where, nprobes=nprobes)
        return reciprocal_rank_fusion([dense_hits, _hydrate(resident, keyword_found)], k)
    # LanceDB's full-text search needs no embedding: it runs while the query is encoded and searched
    # (all three release the GIL).
    keyword_hits = _hybrid_pool.submit(keyword, index, text, depth, where)
    dense_hits = dense_ranking(embedded(), depth)
    return reciprocal_rank_fusion([dense_hits, keyword_hits.result()], k)


async def search_copy(
    resident: ResidentVectors,
    mode: SearchMode,
    text: str,
    k: int,
    collections: Sequence[str] | None,
    encoder: QueryBatcher,
) -> tuple[list[Hit] | None, np.ndarray | None]:
    """`search` answered from the copy alone, on the event loop: (hits, the query's vector).
    Hits are None when LanceDB must answer (too few rows of the scope in the probed lists, or
    a copy without text); the vector, when made, is returned for that search.

    The dense ranking runs on the encoder thread as soon as the vector is made (its scoring
    releases the GIL, so it overlaps the loop's work), and the keyword ranking on the loop
    while the query is encoded."""
    if mode is SearchMode.KEYWORD:
        return resident_keyword(resident, text, k, collections), None
    depth = k if mode is SearchMode.DENSE else fusion_depth(k)
    ranked = encoder.submit_then(
        text, lambda vector: (vector, resident.search(vector, depth, collections))
    )
    keyword_found = (
        resident.keyword_search(text, depth, collections) if mode is SearchMode.HYBRID else None
    )
    vector, dense_found = await asyncio.wrap_future(ranked)
    if dense_found is None:
        return None, vector
    if mode is SearchMode.DENSE:
        return _hydrate(resident, dense_found), vector
    if keyword_found is None:
        return None, vector
    return _hydrate(resident, fuse_resident([dense_found, keyword_found], k, resident)), vector


class ModeUnavailable(InvalidFilter):
    """A search mode this index cannot answer (keyword search on a dense-only Upstash index)."""


def _hits(found: list[SearchHit]) -> list[Hit]:
    return [
        Hit(hit.chunk_id, hit.score, {name: hit.row.get(name) for name in RESULT_COLUMNS})
        for hit in found
    ]


def upstash_search(
    index: UpstashVectorIndex,
    mode: SearchMode,
    text: str,
    vector: np.ndarray | None,
    k: int,
    where: str | None,
) -> list[Hit]:
    """Upstash Vector ranks itself: dense by cosine; keyword (BM25-like, IDF-weighted sparse
    vectors) and hybrid (RRF of both, fused by Upstash) on a hybrid index only."""
    if mode is SearchMode.KEYWORD:
        try:
            return _hits(index.keyword_search(text, k, where))
        except KeywordSearchUnavailable as error:
            raise ModeUnavailable(str(error)) from error
    assert vector is not None
    if mode is SearchMode.HYBRID and index.is_hybrid:
        return _hits(index.hybrid_search(vector, text, k, where))
    # Dense, or hybrid on a dense-only index: the dense ranking is the best it has (chat asks
    # for hybrid and must still answer).
    return _hits(index.search(vector, k, where))

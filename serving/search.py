"""Dense, keyword and hybrid retrieval over one index version, with metadata filters.

Hybrid fuses the dense and full-text rankings by reciprocal rank fusion (RRF): robust to the two
scores living on different scales, and no weights to tune per corpus.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from lorechat_pipeline.core.vector_index import LanceVectorIndex, sql_string

RRF_K = 60
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


def dense(index: LanceVectorIndex, vector: np.ndarray, k: int, where: str | None) -> list[Hit]:
    query = index.table.search(vector.astype(np.float32), vector_column_name="vector")
    query = query.distance_type("cosine").select(RESULT_COLUMNS).limit(k)
    if where:
        query = query.where(where, prefilter=True)
    rows = query.to_arrow().to_pylist()
    return [Hit(row["chunk_id"], 1.0 - float(row.pop("_distance")), row) for row in rows]


def keyword(index: LanceVectorIndex, text: str, k: int, where: str | None) -> list[Hit]:
    query = index.table.search(text, query_type="fts").select(RESULT_COLUMNS).limit(k)
    if where:
        query = query.where(where, prefilter=True)
    rows = query.to_arrow().to_pylist()
    return [Hit(row["chunk_id"], float(row.pop("_score")), row) for row in rows]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    scores: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            rows.setdefault(hit.chunk_id, hit.row)
    best = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
    return [Hit(chunk_id, scores[chunk_id], rows[chunk_id]) for chunk_id in best]


def search(
    index: LanceVectorIndex,
    mode: SearchMode,
    text: str,
    vector: np.ndarray | None,
    k: int,
    where: str | None,
) -> list[Hit]:
    if mode is SearchMode.KEYWORD:
        return keyword(index, text, k, where)
    assert vector is not None
    if mode is SearchMode.DENSE:
        return dense(index, vector, k, where)
    depth = max(k * 4, 20)  # fuse deeper lists than returned: RRF needs overlap to work
    return reciprocal_rank_fusion(
        [dense(index, vector, depth, where), keyword(index, text, depth, where)], k
    )

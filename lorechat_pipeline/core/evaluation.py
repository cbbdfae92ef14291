"""Retrieval quality of an index version on a golden query set: the promotion gate.

A golden set is a JSON-lines file of `{"query": ..., "relevant_documents": [...]}` (documents are
source keys). Without one, a set is derived from the current version: a sentence taken from the
middle of a sample of chunks, whose own document is the relevant one. That catches what a new
model or chunker must not break (finding a passage from its own words) without anyone curating
queries; a curated set is better and always wins when configured.
"""

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

DEFAULT_GOLDEN_QUERIES = 50
MIN_QUERY_WORDS = 6
MAX_QUERY_WORDS = 24

SearchDocuments = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class GoldenQuery:
    query: str
    relevant_documents: frozenset[str]


@dataclass(frozen=True)
class RetrievalQuality:
    queries: int
    k: int
    recall_at_k: float  # share of queries with a relevant document in the top k
    mrr: float  # mean reciprocal rank of the first relevant document (0 when absent)

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "queries": self.queries,
            "k": self.k,
            f"recall_at_{self.k}": round(self.recall_at_k, 4),
            "mrr": round(self.mrr, 4),
        }


@dataclass(frozen=True)
class QualityVerdict:
    passed: bool
    message: str


def parse_golden_queries(raw: bytes | str) -> list[GoldenQuery]:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    queries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            query = str(item["query"]).strip()
            relevant = frozenset(str(key) for key in item["relevant_documents"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"golden queries line {number}: expected "
                '{"query": "...", "relevant_documents": ["key", ...]}'
            ) from error
        if not query or not relevant:
            raise ValueError(f"golden queries line {number}: empty query or relevant_documents")
        queries.append(GoldenQuery(query, relevant))
    return queries


def _sample_order(chunk_id: str) -> str:
    # A stable pseudo-random order: the same index yields the same golden set on every run.
    return hashlib.sha256(chunk_id.encode()).hexdigest()


def _middle_sentence(text: str) -> str | None:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    usable = [s for s in sentences if len(s.split()) >= MIN_QUERY_WORDS]
    if not usable:
        return None
    sentence = usable[len(usable) // 2]
    return " ".join(sentence.split()[:MAX_QUERY_WORDS])


def derive_golden_queries(
    chunks: Iterable[tuple[str, str, str]], count: int = DEFAULT_GOLDEN_QUERIES
) -> list[GoldenQuery]:
    """Queries from (chunk_id, document, text) rows: one per document at most, stable order."""
    queries: list[GoldenQuery] = []
    seen_documents: set[str] = set()
    seen_queries: set[str] = set()
    for _chunk_id, document, text in sorted(chunks, key=lambda row: _sample_order(row[0])):
        if document in seen_documents:
            continue
        query = _middle_sentence(text)
        if query is None or query in seen_queries:
            continue
        seen_documents.add(document)
        seen_queries.add(query)
        queries.append(GoldenQuery(query, frozenset({document})))
        if len(queries) == count:
            break
    return queries


def evaluate(search: SearchDocuments, golden: Sequence[GoldenQuery], k: int) -> RetrievalQuality:
    """`search(query, k)` returns the documents of the top hits, best first."""
    if not golden:
        return RetrievalQuality(0, k, 0.0, 0.0)
    found = reciprocal_ranks = 0.0
    for item in golden:
        ranked = list(dict.fromkeys(search(item.query, k)))[:k]
        rank = next((i for i, doc in enumerate(ranked, 1) if doc in item.relevant_documents), 0)
        if rank:
            found += 1
            reciprocal_ranks += 1.0 / rank
    return RetrievalQuality(len(golden), k, found / len(golden), reciprocal_ranks / len(golden))


def judge(
    candidate: RetrievalQuality, current: RetrievalQuality | None, margin: float
) -> QualityVerdict:
    """The candidate may be worse than the current version by at most `margin` (absolute)."""
    if current is None:
        return QualityVerdict(True, "no current version to compare with: the first version")
    if candidate.queries == 0:
        return QualityVerdict(False, "no golden queries to judge the candidate by")
    drops = {
        "recall": current.recall_at_k - candidate.recall_at_k,
        "mrr": current.mrr - candidate.mrr,
    }
    worst = max(drops, key=lambda name: drops[name])
    summary = (
        f"recall@{candidate.k} {candidate.recall_at_k:.3f} vs {current.recall_at_k:.3f}, "
        f"MRR {candidate.mrr:.3f} vs {current.mrr:.3f} on {candidate.queries} queries"
    )
    if drops[worst] > margin:
        return QualityVerdict(
            False,
            f"candidate is worse than the current version by {drops[worst]:.3f} {worst} "
            f"(allowed {margin:.3f}): {summary}",
        )
    return QualityVerdict(True, summary)

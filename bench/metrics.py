"""Retrieval metrics as BEIR/pytrec_eval compute them, and BEIR-format folder loading.

nDCG@k uses graded gains (the qrels score) with log2 discounts over the ideal ordering of the
judged documents; recall@k is the share of a query's relevant documents found in the top k;
MRR@k is the reciprocal rank of the first relevant document within k (0 when none). Judgments
with score <= 0 are not relevant. Queries without a relevant judgment are left out.
"""

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

Qrels = dict[str, dict[str, int]]  # query id -> document id -> graded relevance


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    gains = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    if ideal == 0:
        return 0.0
    found = sum(
        judged.get(doc, 0) / math.log2(rank + 2)
        for rank, doc in enumerate(ranking[:k])
        if judged.get(doc, 0) > 0
    )
    return found / ideal


def recall_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def evaluate(rankings: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, recall@100 and MRR@10 over the judged queries (missing ranking: zeros)."""
    scored = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    if not scored:
        return {"queries": 0, "ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    totals = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for query in scored:
        ranking, judged = rankings.get(query, []), qrels[query]
        totals["ndcg@10"] += ndcg_at_k(ranking, judged, 10)
        totals["recall@100"] += recall_at_k(ranking, judged, 100)
        totals["mrr@10"] += mrr_at_k(ranking, judged, 10)
    return {
        "queries": len(scored),
        **{name: round(v / len(scored), 4) for name, v in totals.items()},
    }


def documents_by_max_score(hits: Sequence[tuple[str, float]], k: int) -> list[str]:
    """Chunk hits (document id, score; best first) to a document ranking: each document's best
    chunk decides its place."""
    best: dict[str, float] = {}
    for document, score in hits:
        if document not in best or score > best[document]:
            best[document] = score
    return sorted(best, key=lambda d: (-best[d], d))[:k]


def load_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with path.open(newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        for row in rows:
            if len(row) < 3 or row[0].strip() == "query-id":
                continue
            query, document, score = (cell.strip() for cell in row[:3])
            qrels.setdefault(query, {})[document] = int(score)
    return qrels


def read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)

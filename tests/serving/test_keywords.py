"""Full-text search from the serving copy in memory: LanceDB's analysis, scores and rankings."""

import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lorechat_pipeline.core.ids import document_id
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from serving.keywords import K1, Analyzer, B, KeywordIndex
from serving.resident import ResidentVectors, vectors_of
from serving.search import (
    RESULT_COLUMNS,
    SearchMode,
    keyword,
    reciprocal_rank_fusion,
    resident_dense,
    resident_keyword,
    search,
)
from tests.pipeline.test_vector_index import MANIFEST, rows

REPO = Path(__file__).resolve().parents[2]
EDGE_CASES = [
    "The mice were running in circles; downs and ups of a naïve café owner",
    "snake_case identifiers, e.g. C++ 3.11 and don't-stop words",
    "œuvre complète, Straße, ﬁne ligatures and ÀÉÎÕÜ capitals",
    "a" * 39 + " " + "b" * 40 + " short words after long ones",
    "apple apple apple banana",
    "",
]


def corpus() -> list[str]:
    """The repository's own prose cut into 400-character windows, and the edge cases."""
    texts = list(EDGE_CASES)
    for path in sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")]):
        text = path.read_text()
        texts += [text[start : start + 400] for start in range(0, len(text), 400)]
    return texts


def queries(texts: list[str], count: int = 100) -> list[str]:
    chosen = random.Random(7)
    found = [
        "running mouse",
        "downs",
        "naive cafe",
        "oeuvre",
        "snake case",
        "the were",  # stop words only
        "apple apple banana",
        "b" * 40,
        "zzz-not-a-word-anywhere",
        "",
    ]
    while len(found) < count:
        words = chosen.choice(texts).split()
        if len(words) >= 8:
            start = chosen.randrange(len(words) - 6)
            found.append(" ".join(words[start : start + chosen.randint(1, 6)]))
    return found


@pytest.fixture(scope="module")
def lance_and_copy(tmp_path_factory: pytest.TempPathFactory):
    texts = corpus()
    index = LanceVectorIndex.open_or_create(str(tmp_path_factory.mktemp("index")), MANIFEST)
    index.replace_documents(rows("docs.md", texts), [document_id("docs.md")])
    index.maintain(ann_index_min_rows=1_000_000)
    data = index.rows(None, [*RESULT_COLUMNS, "vector"])
    copy = ResidentVectors((index.name, 0), vectors_of(data), data.drop_columns(["vector"]))
    return index, copy, texts


def assert_same_ranking(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    """The same hits with the same scores (to float32 rounding), best first; hits with equal
    scores may come in either order."""
    assert {chunk for chunk, _ in got} == {chunk for chunk, _ in expected}
    scores = dict(expected)
    for chunk, score in got:
        assert score == pytest.approx(scores[chunk], rel=1e-4), chunk
    ranked = [score for _, score in got]
    assert ranked == sorted(ranked, reverse=True)


def test_rankings_and_scores_are_lancedbs(lance_and_copy) -> None:
    index, copy, texts = lance_and_copy
    compared = 0
    for query in queries(texts):
        expected = [(h.chunk_id, h.score) for h in keyword(index, query, 1000, None)]
        found = copy.keyword_search(query, 1000)
        assert found is not None
        rows = copy.result_rows(found)
        got = [(row["chunk_id"], hit.score) for hit, row in zip(found, rows, strict=True)]
        assert_same_ranking(got, expected)
        compared += bool(expected)
    assert compared > 70  # most queries match something: the comparison is not vacuous


def test_search_answers_keyword_and_hybrid_from_memory(lance_and_copy, monkeypatch) -> None:
    index, copy, _ = lance_and_copy
    query = "resident copy in memory"
    expected = [(h.chunk_id, h.score) for h in keyword(index, query, 1000, None)]
    assert expected

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("LanceDB's full-text search was asked")

    monkeypatch.setattr("serving.search.keyword", refuse)
    hits = search(index, SearchMode.KEYWORD, query, None, 1000, None, resident=copy)
    assert_same_ranking([(h.chunk_id, h.score) for h in hits], expected)
    vector = np.array([0.2, 0.9, 0.1, 0.3], dtype=np.float32)
    hybrid = search(index, SearchMode.HYBRID, query, vector, 5, None, resident=copy)
    dense_hits = resident_dense(copy, vector, 20, None)
    keyword_hits = resident_keyword(copy, query, 20, None)
    assert dense_hits is not None
    assert keyword_hits is not None
    fused = reciprocal_rank_fusion([dense_hits, keyword_hits], 5)
    assert [(h.chunk_id, h.score) for h in hybrid] == [(h.chunk_id, h.score) for h in fused]
    # Whole result rows, hydrated for the returned hits only.
    assert [h.row for h in hybrid] == [h.row for h in fused]
    assert all(set(RESULT_COLUMNS) <= set(h.row) for h in hybrid)


def test_a_collection_scope_keeps_other_collections_hits_out(tmp_path: Path) -> None:
    texts = [f"shared words about lighthouses, note {n}" for n in range(12)]
    table = rows("notes.md", texts)
    scoped = table.set_column(
        table.schema.get_field_index("collection"),
        "collection",
        pa.array(["red" if n % 3 == 0 else "blue" for n in range(12)]),
    )
    copy = ResidentVectors(("t", 0), vectors_of(scoped), scoped.drop_columns(["vector"]))
    found = copy.keyword_search("lighthouse", 10, ["red"])
    assert found is not None
    assert {row["collection"] for row in copy.result_rows(found)} == {"red"}
    assert len(found) == 4
    assert copy.keyword_search("lighthouse", 10, ["green"]) == []
    everyone = copy.keyword_search("lighthouse", 20, ["red", "blue"])
    assert everyone is not None
    assert len(everyone) == 12


def test_the_analysis_is_lancedbs() -> None:
    analyzer = Analyzer()
    assert analyzer.terms("The mice were RUNNING") == ["mice", "run"]
    # Stop words go after stemming: "downs" stems to "down", a stop word.
    assert analyzer.terms("downs ups dos") == ["dos"]
    assert analyzer.terms("naïve Café œuvre ﬁne") == ["naiv", "cafe", "oeuvr", "fine"]
    assert analyzer.terms("snake_case e.g. 3.11") == ["snake", "case", "e", "g", "3", "11"]
    assert analyzer.terms("x" * 39 + " " + "y" * 40) == ["x" * 39]


def test_a_copy_without_text_has_no_keyword_index() -> None:
    table = rows("a.md", ["one", "two"]).drop_columns(["text"])
    copy = ResidentVectors(("t", 0), vectors_of(table), table.drop_columns(["vector"]))
    assert copy.keywords is None
    assert copy.keyword_search("one", 5) is None


def test_an_empty_corpus_matches_nothing() -> None:
    empty = KeywordIndex([])
    scores, found = empty.search("anything", 5)
    assert len(scores) == len(found) == 0


def bm25_by_hand(texts: list[str], query: str) -> dict[int, float]:
    """Every matching row's BM25 score, computed term by term from the module's constants."""
    analyzer = Analyzer()
    documents = [Counter(analyzer.terms(text)) for text in texts]
    lengths = [sum(terms.values()) for terms in documents]
    counted = sum(1 for length in lengths if length)
    average = sum(lengths) / counted
    scores: dict[int, float] = {}
    for term, times in Counter(analyzer.terms(query)).items():
        having = sum(1 for terms in documents if term in terms)
        idf = math.log(1 + (counted - having + 0.5) / (having + 0.5))
        for row, terms in enumerate(documents):
            if term in terms:
                frequency = terms[term]
                norm = K1 * (1 - B + B * lengths[row] / average)
                part = frequency * (K1 + 1) / (frequency + norm)
                scores[row] = scores.get(row, 0.0) + idf * part * times
    return scores


def test_pruning_common_terms_keeps_the_exact_top_k() -> None:
    # Zipf-like word use: a handful of words are in most texts, most words in few.
    chosen = random.Random(11)
    vocabulary = [f"word{n}" for n in range(400)]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    texts = [
        " ".join(chosen.choices(vocabulary, weights, k=chosen.randint(5, 40))) for _ in range(3000)
    ]
    index = KeywordIndex(texts)
    common = {index.term_ids[f"word{n}"] for n in range(3)}
    assert common <= set(index.common_weights)  # the pruned path has work to do
    mask = np.array([row % 3 != 0 for row in range(len(texts))])
    pruned = 0
    original = index._search_every_match
    calls: list[int] = []

    def counting(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    index._search_every_match = counting  # type: ignore[method-assign]
    for n in range(60):
        query = " ".join(
            [f"word{chosen.randrange(3)}", f"word{chosen.randrange(30, 400)}"]
            + [f"word{chosen.randrange(400)}" for _ in range(n % 3)]
        )
        expected = bm25_by_hand(texts, query)
        for allowed in (None, mask):
            before = len(calls)
            scores, rows = index.search(query, 10, allowed)
            pruned += len(calls) == before
            eligible = {
                row: score for row, score in expected.items() if allowed is None or allowed[row]
            }
            best = sorted(eligible.values(), reverse=True)[:10]
            assert scores.tolist() == pytest.approx(best, rel=1e-5), query
            for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
                assert eligible[row] == pytest.approx(score, rel=1e-5)
    assert pruned > 60  # most searches were decided without visiting the common terms


def test_a_common_term_that_could_still_win_is_not_pruned() -> None:
    # "alpha" is in 11 of 80 texts (common: over an eighth), once as a short text of only
    # alpha; "beta" is in 10 long texts. The alpha-only text outscores every beta text, so
    # pruning must not decide from the beta texts alone.
    filler = " ".join(f"filler{n}" for n in range(30))
    texts = [f"beta {filler}"] * 10 + [f"alpha {filler}"] * 10 + ["alpha alpha alpha"]
    texts += [f"other{n} {filler}" for n in range(59)]
    index = KeywordIndex(texts)
    assert index.term_ids["alpha"] in index.common_weights
    assert index.term_ids["beta"] not in index.common_weights
    expected = bm25_by_hand(texts, "alpha beta")
    assert max(expected, key=expected.__getitem__) == 20  # the alpha-only text
    scores, rows = index.search("alpha beta", 2)
    assert rows.tolist()[0] == 20
    assert scores.tolist() == pytest.approx([expected[row] for row in rows.tolist()], rel=1e-5)
    assert scores[1] == pytest.approx(sorted(expected.values())[-2], rel=1e-5)

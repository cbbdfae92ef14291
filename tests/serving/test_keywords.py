"""Full-text search from the serving copy in memory: LanceDB's analysis, scores and rankings."""

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lorechat_pipeline.core.ids import document_id
from lorechat_pipeline.core.vector_index import LanceVectorIndex
from serving.keywords import Analyzer, KeywordIndex
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

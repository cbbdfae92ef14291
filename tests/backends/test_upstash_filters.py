"""Filter translation to Upstash's syntax, as a table; each output is also parsed by the contract
server's independent parser of Upstash's grammar and evaluated on sample metadata."""

from typing import Any

import pytest

from lorechat_pipeline.core.backends.upstash_filters import (
    FilterError,
    from_filter_model,
    from_sql,
)
from serving.search import FILTERABLE, filter_sql
from tests.backends.upstash_contract_server import ApiError, _FilterParser, matches

MODEL_CASES: list[tuple[dict[str, Any] | None, list[str] | None, str]] = [
    ({"document": "a.md"}, None, "document = 'a.md'"),
    ({"page_number": 3}, None, "page_number = 3"),
    ({"section": {"in": ["Intro", "Usage"]}}, None, "section IN ('Intro', 'Usage')"),
    ({"page_number": {"gte": 3, "lt": 7}}, None, "page_number >= 3 AND page_number < 7"),
    ({"ordinal": {"gt": 0, "lte": 2}}, None, "ordinal > 0 AND ordinal <= 2"),
    ({"title": "it's"}, None, "title = 'it\\'s'"),
    ({"title": "back\\slash"}, None, "title = 'back\\\\slash'"),
    ({"title": "x' OR shard = 'y"}, None, "title = 'x\\' OR shard = \\'y'"),
    ({"title": 'say "hi"'}, None, "title = 'say \"hi\"'"),
    (None, ["handbook", "faq"], "collection IN ('handbook', 'faq')"),
    ({"document": "a.md"}, ["handbook"], "document = 'a.md' AND collection IN ('handbook')"),
    (None, None, ""),
]


@pytest.mark.parametrize(("filters", "collections", "expected"), MODEL_CASES)
def test_filter_model_to_upstash(
    filters: dict[str, Any] | None, collections: list[str] | None, expected: str
) -> None:
    translated = from_filter_model(filters, collections, FILTERABLE)
    assert translated.text == expected
    # The same request through serving's SQL and our SQL translation lands on the same filter.
    assert from_sql(filter_sql(filters, collections)).text == expected


SQL_CASES = [
    ("shard = 'shard-003'", "shard = 'shard-003'"),
    ("document_id IN ('a', 'b''c')", "document_id IN ('a', 'b\\'c')"),
    ("(page_number >= 3) AND (collection IN ('x'))", "page_number >= 3 AND collection IN ('x')"),
    ("a = 1 OR b = 2 AND c = 3", "a = 1 OR (b = 2 AND c = 3)"),
    ("(a = 1 OR b = 2) AND c = 3", "(a = 1 OR b = 2) AND c = 3"),
    ("NOT (a = 1 OR b <> 'x')", "a != 1 AND b = 'x'"),
    ("NOT a IN ('x', 'y')", "a NOT IN ('x', 'y')"),
    ("a NOT IN (1, 2)", "a NOT IN (1, 2)"),
    ("section IS NULL", "HAS NOT FIELD section"),
    ("section IS NOT NULL", "HAS FIELD section"),
    ("\"shard\" = 's' AND TRUE", "shard = 's'"),
    ("score > -1.5", "score > -1.5"),
    ("flag = TRUE OR a = 1", "flag = true OR a = 1"),
    ("a = 1 OR TRUE", ""),
    ("", ""),
]


@pytest.mark.parametrize(("sql", "expected"), SQL_CASES)
def test_sql_to_upstash(sql: str, expected: str) -> None:
    assert from_sql(sql).text == expected


def test_false_matches_nothing_and_skips_the_call() -> None:
    for sql in ("FALSE", "(a = 1) AND (FALSE)", "NOT TRUE"):
        assert from_sql(sql).matches_nothing
    assert from_filter_model(None, []).matches_nothing
    with pytest.raises(FilterError, match="matches nothing"):
        _ = from_sql("FALSE").text


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"vector": 1}, "cannot filter on 'vector'"),
        ({"page_number": "3"}, "takes integers"),
        ({"title": 3}, "takes strings"),
        ({"page_number": {"between": [1, 2]}}, "unknown operator"),
        ({"section": {"in": []}}, "non-empty list"),
        ({"section": {}}, "empty condition"),
    ],
)
def test_invalid_filters_are_refused(filters: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        from_filter_model(filters, None, FILTERABLE)


@pytest.mark.parametrize("sql", ["a = ", "a LIKE 'x'", "a = 1 ) ", "1 = a", "a = 'x' ; b"])
def test_untranslatable_sql_is_refused(sql: str) -> None:
    with pytest.raises(FilterError):
        from_sql(sql)


SAMPLES: list[dict[str, Any]] = [
    {"title": "it's", "page_number": 3, "collection": "handbook", "section": "Intro"},
    {"title": "x' OR shard = 'y", "page_number": 7, "collection": "faq"},
    {"title": "back\\slash", "page_number": 1, "collection": "handbook", "flag": True},
    {"title": 'say "hi"', "page_number": 4, "collection": "faq", "section": "Usage"},
]


@pytest.mark.parametrize(
    "sql",
    [sql for sql, _ in SQL_CASES if sql and "FALSE" not in sql]
    + [filter_sql(f, c) or "" for f, c, _ in MODEL_CASES if f or c],
)
def test_local_evaluation_agrees_with_the_server(sql: str) -> None:
    """Count and rows evaluate filters locally: they must agree with Upstash's own reading."""
    translated = from_sql(sql)
    node = _FilterParser(translated.text).parse() if translated.text else None
    for metadata in SAMPLES:
        try:
            expected = True if node is None else matches(node, metadata)
        except ApiError:
            continue
        assert translated.matches(metadata) == expected, (sql, metadata)


def test_an_injected_quote_stays_inside_its_string() -> None:
    text = from_filter_model({"title": "x' OR shard = 'y"}, None).text
    assert _FilterParser(text).parse() == ("cmp", "title", "=", "x' OR shard = 'y")

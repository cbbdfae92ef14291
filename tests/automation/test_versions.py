"""The pure parts of blue/green: the alias document, golden queries and the quality verdict."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lorechat_pipeline.core.aliases import ALIAS_KEY, AliasStore, IndexAlias
from lorechat_pipeline.core.evaluation import (
    GoldenQuery,
    RetrievalQuality,
    derive_golden_queries,
    evaluate,
    judge,
    parse_golden_queries,
)
from lorechat_pipeline.core.storage import LocalObjectStore

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_alias_switches_in_one_write_and_retires_the_previous_version(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    aliases = AliasStore(store)
    assert aliases.read() is None
    aliases.promote("chunks_a", reason="first", now=T0)
    aliases.promote("chunks_b", reason="better", now=T0 + timedelta(days=1))
    alias = aliases.read()
    assert alias is not None
    assert alias.table == "chunks_b"
    assert [(v.table, v.retired_at) for v in alias.retired] == [
        ("chunks_a", (T0 + timedelta(days=1)).isoformat())
    ]
    # Rolling back to a retired version takes it off the retired list.
    aliases.promote("chunks_a", reason="rollback", now=T0 + timedelta(days=2))
    alias = aliases.read()
    assert alias is not None
    assert alias.table == "chunks_a"
    assert [v.table for v in alias.retired] == ["chunks_b"]
    assert IndexAlias.from_json(store.read(ALIAS_KEY)) == alias


def test_retired_versions_expire_after_retention(tmp_path: Path) -> None:
    aliases = AliasStore(LocalObjectStore(tmp_path))
    aliases.promote("v1", reason="first", now=T0)
    aliases.promote("v2", reason="next", now=T0 + timedelta(hours=1))
    alias = aliases.read()
    assert alias is not None
    week = timedelta(days=7)
    assert alias.expired(week, T0 + timedelta(days=7)) == []
    assert alias.expired(week, T0 + timedelta(days=7, hours=1)) == ["v1"]
    forgotten = aliases.forget(["v1"])
    assert forgotten is not None
    assert forgotten.retired == ()
    assert forgotten.table == "v2"


def test_alias_of_an_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown index alias format"):
        IndexAlias.from_json('{"format": 99, "table": "x"}')


def test_golden_queries_parse_and_report_the_bad_line() -> None:
    raw = '{"query": "tea", "relevant_documents": ["a.md"]}\n\n{"query": "x"}\n'
    with pytest.raises(ValueError, match="line 3"):
        parse_golden_queries(raw)
    parsed = parse_golden_queries(raw.splitlines()[0])
    assert parsed == [GoldenQuery("tea", frozenset({"a.md"}))]


def test_derived_golden_queries_are_stable_and_one_per_document() -> None:
    text = (
        "Intro line. The orchard grows twelve varieties of apples on the south hill. "
        "Harvest starts in September and lasts about six weeks in total. End."
    )
    rows = [(f"doc{n}#0000{m}-x", f"doc{n}.md", text) for n in range(5) for m in range(3)]
    first = derive_golden_queries(rows, count=10)
    assert derive_golden_queries(list(reversed(rows)), count=10) == first
    # Identical sentences make identical queries: only one survives.
    assert len(first) == 1
    assert first[0].query.startswith("Harvest starts in September")
    assert derive_golden_queries([("c", "d.md", "too short")]) == []


def test_evaluate_and_judge() -> None:
    golden = [GoldenQuery("q1", frozenset({"a"})), GoldenQuery("q2", frozenset({"b"}))]
    rankings = {"q1": ["a", "x"], "q2": ["x", "b"]}
    quality = evaluate(lambda query, k: rankings[query][:k], golden, k=2)
    assert quality.recall_at_k == 1.0
    assert quality.mrr == pytest.approx(0.75)
    assert evaluate(lambda query, k: rankings[query][:k], golden, k=1).recall_at_k == 0.5

    current = RetrievalQuality(10, 5, 0.90, 0.80)
    assert judge(RetrievalQuality(10, 5, 0.89, 0.80), current, margin=0.02).passed
    refused = judge(RetrievalQuality(10, 5, 0.90, 0.70), current, margin=0.02)
    assert not refused.passed
    assert "0.100 mrr" in refused.message
    assert judge(RetrievalQuality(10, 5, 0.1, 0.1), None, margin=0.0).passed
    assert not judge(RetrievalQuality(0, 5, 0.0, 0.0), current, margin=1.0).passed

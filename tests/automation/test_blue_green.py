"""Blue/green re-embedding: a new model or chunker builds a new index version while searches read
the current one; the alias switches only when the version is complete and not worse."""

import json
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.test.data_versions import get_stale_status_resolver

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names, shard_of
from lorechat_pipeline.core.manifest import ManifestMismatch
from lorechat_pipeline.defs.automation.sensors import build_promotion_sensor
from lorechat_pipeline.runner import Pipeline
from tests.pipeline.conftest import PipelineFactory, write

TOPICS = {
    "solar": "Photovoltaic panels on the roof convert sunlight into electricity for the office.",
    "tea": "Green tea leaves should steep at eighty degrees for two minutes, never boiling.",
    "bikes": "A punctured inner tube is found by submerging it in water and watching bubbles.",
    "payroll": "Salaries are paid on the last working day of each month by bank transfer.",
    "parking": "Visitors park in the north lot and show their badge at the barrier.",
    "security": "Passwords rotate every ninety days and must contain at least twelve characters.",
    "kitchen": "The dishwasher runs at six in the evening; load it before you leave.",
    "printers": "The colour printer on floor two needs a toner change when the light blinks red.",
    "holidays": "Annual leave requests go to your manager at least two weeks in advance.",
    "plants": "Water the office ferns on Mondays and keep them out of direct sunlight.",
}
QUERIES = {
    "solar": "how do the roof panels make power",
    "tea": "what temperature to brew green tea",
    "bikes": "find the hole in a flat bicycle tube",
    "payroll": "when do we get our monthly salary",
    "parking": "where can guests leave their car",
    "security": "how often must I change my password",
    "kitchen": "what time does the dishwasher start",
    "printers": "replacing toner in the colour printer",
    "holidays": "how early to request vacation days",
    "plants": "watering schedule for office plants",
}
# Identical openings: a model that reads only the first few tokens cannot tell pages apart.
BOILERPLATE = "Operations handbook of the company, internal edition, please keep it current. "
# A new chunker (same embedder): green rows differ, search reads them with the same model.
SMALL_CHUNKS = {
    "chunk_max_characters": 120,
    "chunk_new_after_characters": 100,
    "chunk_combine_under_characters": 50,
}


def handbook(folder: Path) -> None:
    for topic, text in TOPICS.items():
        write(folder, f"handbook/{topic}.md", BOILERPLATE + text)


def golden_set(path: Path) -> Path:
    lines = [
        json.dumps({"query": q, "relevant_documents": [f"handbook/{t}.md"]})
        for t, q in QUERIES.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def top_document(pipeline: Pipeline, query: str) -> str:
    index = pipeline.open_current_index()
    return index.search(pipeline.embedder.embed_query(query), k=1)[0].document


def test_new_chunker_builds_a_new_version_and_is_promoted(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source, home = tmp_path / "source", tmp_path / "home"
    handbook(source)
    blue = make_pipeline(source, home=home)
    blue.ingest()
    blue_table = blue.vector_store.aliases().current_table()
    assert blue_table == blue.open_index().name  # the first version is current at once

    green = make_pipeline(source, home=home, **SMALL_CHUNKS)
    summary = green.ingest()
    green_table = green.open_index().name
    assert green_table != blue_table
    assert summary.promotion is not None
    assert summary.promotion.promoted
    alias = green.vector_store.aliases().read()
    assert alias is not None
    assert alias.table == green_table
    assert [v.table for v in alias.retired] == [blue_table]
    # Searches (same embedder) now read green; blue is kept for the retention period.
    assert blue.open_current_index().name == green_table
    assert blue_table in green.vector_store.versions()
    assert top_document(blue, QUERIES["tea"]) == "handbook/tea.md"

    # Nothing new to promote: a second ingest neither runs nor promotes anything.
    again = green.ingest()
    assert again.shards_run == []
    assert again.promotion is None

    # Past retention the old version is dropped and forgotten.
    expired = make_pipeline(
        source,
        home=home,
        **SMALL_CHUNKS,
        index_retention_hours=0,
    )
    result = expired.definitions.resolve_job_def("index_gc_job").execute_in_process(
        instance=expired.instance()
    )
    assert result.success
    assert blue_table not in expired.vector_store.versions()
    alias = expired.vector_store.aliases().read()
    assert alias is not None
    assert alias.table == green_table
    assert alias.retired == ()


def test_worse_model_is_refused_and_search_keeps_the_current_version(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source, home = tmp_path / "source", tmp_path / "home"
    handbook(source)
    golden = golden_set(tmp_path / "golden.jsonl")
    settings = {"golden_queries": str(golden), "promotion_k": 1}
    blue = make_pipeline(source, home=home, **settings)
    blue.ingest()
    blue_table = blue.vector_store.aliases().current_table()
    assert top_document(blue, QUERIES["payroll"]) == "handbook/payroll.md"

    # The same model reading 8 tokens sees only the shared opening of every page.
    truncated = make_pipeline(source, home=home, embedding_max_tokens=8, **settings)
    summary = truncated.ingest()
    assert summary.promotion is not None
    assert not summary.promotion.promoted
    assert summary.promotion.refused
    assert "retrieval_quality" in summary.promotion.refused
    assert "worse than the current version" in summary.promotion.refused
    # The candidate is complete (parity passed): quality alone refused it.
    assert "row_count_parity" not in summary.promotion.refused
    assert truncated.vector_store.aliases().current_table() == blue_table

    # Search keeps answering from blue, with blue's embedder...
    for topic, query in QUERIES.items():
        assert top_document(blue, query) == f"handbook/{topic}.md"
    # ...and a reader configured with the refused model is told why it cannot read blue.
    with pytest.raises(ManifestMismatch, match="configured embedder"):
        truncated.open_current_index()

    instance = truncated.instance()
    evaluations = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("index_candidate"), "retrieval_quality")]
    )
    assert evaluations, "the refused check is recorded on the instance (visible in the UI)"


def test_incomplete_candidate_is_not_promoted(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source, home = tmp_path / "source", tmp_path / "home"
    handbook(source)
    blue = make_pipeline(source, home=home)
    blue.ingest()
    green = make_pipeline(source, home=home, **SMALL_CHUNKS)
    # Build only one shard of green, then ask for a promotion.
    shard = shard_of("handbook/tea.md", SHARD_COUNT)
    green.definitions.resolve_job_def("ingest_job").execute_in_process(
        partition_key=shard, instance=green.instance()
    )
    promotion = green.promote_if_needed()
    assert promotion is not None
    assert not promotion.promoted
    assert promotion.refused
    assert "row_count_parity" in promotion.refused
    assert green.vector_store.aliases().current_table() == blue.open_index().name


def test_config_change_marks_exactly_the_stale_assets(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source, home = tmp_path / "source", tmp_path / "home"
    write(source, "a.md", "# A\n\nSome text about apples and orchards.")
    shard = shard_of("a.md", SHARD_COUNT)
    base = make_pipeline(source, home=home)
    base.ingest()
    instance = base.instance()

    def statuses(pipeline: Pipeline, partition: str) -> dict[str, str]:
        assets = list(pipeline.definitions.assets or [])
        resolver = get_stale_status_resolver(instance, assets)  # type: ignore[arg-type]
        names = ["raw_documents", "document_chunks", "chunk_embeddings", "vector_index"]
        return {name: resolver.get_status(dg.AssetKey(name), partition).value for name in names}

    assert set(statuses(base, shard).values()) == {"FRESH"}
    other = next(name for name in shard_names(SHARD_COUNT) if name != shard)
    assert set(statuses(base, other).values()) == {"MISSING"}

    rechunked = make_pipeline(
        source, home=home, chunk_max_characters=300, chunk_new_after_characters=200
    )
    assert statuses(rechunked, shard) == {
        "raw_documents": "FRESH",
        "document_chunks": "STALE",
        "chunk_embeddings": "FRESH",  # stale once the new chunks exist (their data version)
        "vector_index": "STALE",
    }
    remodelled = make_pipeline(source, home=home, embedding_max_tokens=128)
    assert statuses(remodelled, shard) == {
        "raw_documents": "FRESH",
        "document_chunks": "FRESH",
        "chunk_embeddings": "STALE",
        "vector_index": "STALE",
    }


def test_promotion_sensor_waits_for_a_complete_candidate(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source, home = tmp_path / "source", tmp_path / "home"
    handbook(source)
    blue = make_pipeline(source, home=home)
    blue.ingest()
    green = make_pipeline(source, home=home, **SMALL_CHUNKS)

    def tick() -> dg.RunRequest | dg.SkipReason:
        sensor = build_promotion_sensor(green.settings)
        names = ("processed_store", "ingestion_config", "embedder", "vector_store")
        resources = {name: green.definitions.resources[name] for name in names}
        with dg.build_sensor_context(resources=resources) as context:
            result = sensor(context)
        assert isinstance(result, dg.RunRequest | dg.SkipReason)
        return result

    assert isinstance(tick(), dg.SkipReason)  # no green version yet
    shard = shard_of("handbook/tea.md", SHARD_COUNT)
    green.definitions.resolve_job_def("ingest_job").execute_in_process(
        partition_key=shard, instance=green.instance()
    )
    partial = tick()
    assert isinstance(partial, dg.SkipReason)
    assert "not complete" in (partial.skip_message or "")

    green.ingest(promote=False)
    ready = tick()
    assert isinstance(ready, dg.RunRequest)
    green_table = green.open_index().name
    assert ready.run_key is not None
    assert ready.run_key.startswith(f"promote:{green_table}:")
    again = tick()
    assert isinstance(again, dg.RunRequest)
    assert again.run_key == ready.run_key  # a duplicate tick asks for the same run

    result = green.definitions.resolve_job_def("promote_job").execute_in_process(
        instance=green.instance()
    )
    assert result.success
    done = tick()
    assert isinstance(done, dg.SkipReason)
    assert green_table in (done.skip_message or "")

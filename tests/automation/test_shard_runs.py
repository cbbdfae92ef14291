"""One run per sensor tick: a run over a range of shards materializes every shard in it, and the
deletion guard in such a run refuses only the deletions, never the rest of the work."""

from pathlib import Path

import dagster as dg

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names, shard_of
from lorechat_pipeline.defs.automation.requests import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
)
from lorechat_pipeline.defs.automation.schedules import reconciliation_requests
from lorechat_pipeline.defs.automation.sensors import source_listing_requests
from lorechat_pipeline.defs.ingestion.assets import DELETION_GUARD_CHECK
from lorechat_pipeline.resources.object_store import LocalFolderStore
from lorechat_pipeline.runner import Pipeline
from tests.pipeline.conftest import PipelineFactory, index_snapshot, write


def launch(
    pipeline: Pipeline, request: dg.RunRequest, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    return pipeline.definitions.resolve_job_def("ingest_job").execute_in_process(
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        raise_on_error=False,
    )


def documents(pipeline: Pipeline) -> set[str]:
    return {document for document, _, _ in index_snapshot(pipeline).values()}


def keys_in_distinct_shards(count: int) -> list[str]:
    keys: dict[str, str] = {}
    for number in range(1000):
        key = f"notes/note-{number}.md"
        keys.setdefault(shard_of(key, SHARD_COUNT), key)
        if len(keys) == count:
            break
    return list(keys.values())


def test_one_tick_is_one_run_that_materializes_every_shard_it_covers(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    pipeline = make_pipeline(source)
    instance = dg.DagsterInstance.ephemeral()
    added = keys_in_distinct_shards(3)
    for number, key in enumerate(added):
        write(source, key, f"# Note {number}\n\nThe answer to question {number} is {number * 3}.")

    requests, cursor = source_listing_requests(LocalFolderStore(path=str(source)), None)
    (request,) = requests
    changed = sorted(shard_of(key, SHARD_COUNT) for key in added)
    first, last = request.tags[PARTITION_RANGE_START_TAG], request.tags[PARTITION_RANGE_END_TAG]
    assert (first, last) == (changed[0], changed[-1])

    result = launch(pipeline, request, instance)
    assert result.success
    assert documents(pipeline) == set(added)
    covered = [s for s in shard_names(SHARD_COUNT) if first <= s <= last]
    for asset in ("raw_documents", "document_chunks", "chunk_embeddings", "vector_index"):
        materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert materialized == set(covered), asset
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["vector_index_row_count"] is True
    assert checks[DELETION_GUARD_CHECK] is True

    # The next tick over the same listing asks for nothing.
    assert source_listing_requests(LocalFolderStore(path=str(source)), cursor)[0] == []


def test_a_refused_deletion_keeps_its_documents_and_lets_the_other_changes_through(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    for number in range(20):
        write(source, f"handbook/page-{number:02d}.md", f"# Page {number}\n\nPolicy {number}.")
    pipeline = make_pipeline(source, deletion_guard_share=0.2, deletion_guard_min_documents=5)
    pipeline.ingest()
    before = documents(pipeline)

    # The handbook's listing comes back empty while a new document lands in a shard that
    # also loses handbook pages: the deletions are refused, the new document is indexed.
    for page in (source / "handbook").iterdir():
        page.unlink()
    lost = {shard_of(key, SHARD_COUNT) for key in before}
    new_key = next(
        key
        for key in (f"misc/new-{n}.md" for n in range(1000))
        if shard_of(key, SHARD_COUNT) in lost
    )
    write(source, new_key, "# New\n\nA document that arrived during the outage.")

    (request,) = reconciliation_requests("2026-12-02T03:00:00+00:00")
    result = launch(pipeline, request, dg.DagsterInstance.ephemeral())
    assert result.success
    (guard,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == DELETION_GUARD_CHECK
    ]
    assert not guard.passed
    assert "refusing to delete 20 of 20 documents" in str(guard.description)
    assert "--confirm-deletions" in str(guard.description)
    refused_shards = guard.metadata["refused_shards"].value
    assert set(str(refused_shards).split(", ")) == lost
    assert documents(pipeline) == before | {new_key}

"""A crash between (or inside) stages, then a re-run: the index equals a clean run's."""

from pathlib import Path

import dagster as dg

from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.runner import Pipeline
from tests.pipeline.conftest import PipelineFactory, index_snapshot, write
from tests.pipeline.faults import CrashingEmbedderResource, Fault, register


def many_documents(folder: Path, count: int) -> None:
    for number in range(count):
        write(
            folder,
            f"notes/note-{number:03d}.md",
            f"# Note {number}\n\nThis note number {number} talks about topic {number % 7} "
            f"and mentions the colour {['red', 'green', 'blue'][number % 3]}.\n",
        )


def test_crash_between_and_inside_stages_converges_on_the_clean_index(
    tmp_path: Path, make_pipeline: PipelineFactory
) -> None:
    source = tmp_path / "source"
    many_documents(source, 60)

    clean = make_pipeline(source, home=tmp_path / "clean")
    clean.ingest()
    expected = index_snapshot(clean)

    crashed = make_pipeline(source, home=tmp_path / "crashed")
    settings = crashed.settings
    definitions = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    shards = crashed.plan().to_run
    assert len(shards) > 1
    # Shard 1: stopped after chunking (a crash between stages).
    dg.materialize(
        [a for a in definitions.assets if a.key.path[-1] in ("raw_documents", "document_chunks")],  # type: ignore[union-attr]
        partition_key=shards[0],
        resources=definitions.resources,
        instance=instance,
    )
    # Shard 2: the embedding stage dies after its first batch (a crash inside a stage).
    flaky = dict(definitions.resources)
    flaky["embedder"] = CrashingEmbedderResource(
        inner=definitions.resources["embedder"],
        fault=register(Fault("recovery-embedding", first=1, times=None)).name,
    )
    crashing_job = dg.Definitions(
        assets=list(definitions.assets or []), jobs=list(definitions.jobs or []), resources=flaky
    ).resolve_job_def("ingest_job")
    result = crashing_job.execute_in_process(
        partition_key=shards[1], instance=instance, raise_on_error=False
    )
    assert not result.success

    recovered = Pipeline.from_settings(settings)
    summary = recovered.ingest()
    assert set(shards[:2]) <= set(summary.shards_run)
    assert index_snapshot(recovered) == expected
    assert recovered.ingest().shards_run == []

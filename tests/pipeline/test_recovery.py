"""A crash between (or inside) stages, then a re-run: the index equals a clean run's."""

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.runner import Pipeline
from tests.pipeline.conftest import PipelineFactory, index_snapshot, write


class CrashingEmbedder(Embedder):
    """Delegates to the real model, then dies mid-stage like a killed worker would."""

    def __init__(self, real: Embedder, batches_before_crash: int) -> None:
        self.real = real
        self.model_id = real.model_id
        self.dimension = real.dimension
        self.remaining = batches_before_crash

    def embed_documents(self, texts: Any) -> np.ndarray:
        if self.remaining == 0:
            raise RuntimeError("simulated crash in the embedding stage")
        self.remaining -= 1
        return self.real.embed_documents(texts)


class CrashingEmbedderResource(EmbedderResource):
    batches_before_crash: int = 1

    def get_embedder(self) -> Embedder:
        return CrashingEmbedder(_real_embedder, self.batches_before_crash)

    def model_id(self) -> str:
        return str(_real_embedder.model_id)


_real_embedder: Any = None


def many_documents(folder: Path, count: int) -> None:
    for number in range(count):
        write(
            folder,
            f"notes/note-{number:03d}.md",
            f"# Note {number}\n\nThis note number {number} talks about topic {number % 7} "
            f"and mentions the colour {['red', 'green', 'blue'][number % 3]}.\n",
        )


def test_crash_between_and_inside_stages_converges_on_the_clean_index(
    tmp_path: Path, make_pipeline: PipelineFactory, embedder: Any
) -> None:
    global _real_embedder
    _real_embedder = embedder
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
    flaky["embedder"] = CrashingEmbedderResource(batches_before_crash=0)
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

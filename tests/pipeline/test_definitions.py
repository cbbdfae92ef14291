"""The code location as Dagster sees it, and asset materialization on an ephemeral instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from lorechat_pipeline.core.ids import SHARD_COUNT, document_id, shard_of
from lorechat_pipeline.core.ledger import load_ledger
from lorechat_pipeline.core.verification import verify_shard
from lorechat_pipeline.definitions import build_definitions, defs
from lorechat_pipeline.defs.vectorization.assets import vector_index
from lorechat_pipeline.settings import load_settings
from tests.conftest import REPO_ROOT
from tests.pipeline.conftest import PipelineFactory

ASSETS = ["raw_documents", "document_chunks", "chunk_embeddings", "vector_index"]
PROMOTION_ASSETS = ["index_candidate", "index_alias"]


def test_code_location_loads_with_bounded_partitions() -> None:
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(ASSETS + PROMOTION_ASSETS)
    for name in PROMOTION_ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def is None
        assert node.group_name == "promotion"
    for name in ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def is not None
        # A sensor tick or a UI backfill is one run over its shards, sharing the warm model.
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        assert len(node.partitions_def.get_partition_keys()) == SHARD_COUNT
        assert node.description
        assert node.group_name in ("ingestion", "vectorization")
        assert node.kinds
    assert vector_index.op.pool == "vector_index_writes"
    assert definitions.resolve_job_def("ingest_job") is not None
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {
        "deletion_guard",
        "vector_index_row_count",
        "vector_index_manifest",
        "row_count_parity",
        "retrieval_quality",
    }


def test_resources_default_to_local_and_switch_to_s3_by_uri(tmp_path: Path) -> None:
    local = build_definitions(load_settings(home=tmp_path)).resources
    assert type(local["source"]).__name__ == "LocalFolderStore"
    assert local["source"].uri == str(tmp_path.resolve() / "inbox")
    remote = build_definitions(
        load_settings(home=tmp_path, source="s3://docs/kb", processed="s3://work/processed")
    ).resources
    assert type(remote["source"]).__name__ == "S3BucketStore"
    assert remote["source"].uri == "s3://docs/kb"
    assert remote["processed_store"].uri == "s3://work/processed"


def test_materialization_metadata_and_checks(corpus: Path, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(corpus)
    shard = shard_of("kitchen/tea.html", SHARD_COUNT)
    result = pipeline.definitions.resolve_job_def("ingest_job").execute_in_process(
        partition_key=shard, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    observed = result.asset_materializations_for_node("raw_documents")[0].metadata
    assert observed["documents_new"].value >= 1
    chunked = result.asset_materializations_for_node("document_chunks")[0].metadata
    assert chunked["chunks"].value >= 1
    assert "preview" in chunked
    assert "quarantine" in chunked
    embedded = result.asset_materializations_for_node("chunk_embeddings")[0].metadata
    assert embedded["tokens"].value > 0
    assert embedded["chunks"].value == chunked["chunks"].value
    indexed = result.asset_materializations_for_node("vector_index")[0].metadata
    assert indexed["chunks_written"].value == chunked["chunks"].value
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["vector_index_row_count"].passed
    assert evaluations["vector_index_manifest"].passed


def test_row_count_check_fails_when_the_index_drifts(
    corpus: Path, make_pipeline: PipelineFactory
) -> None:
    pipeline = make_pipeline(corpus)
    pipeline.ingest()
    index = pipeline.open_index()
    index.table.delete("document = 'bikes.txt'")  # drift behind the pipeline's back
    shard = shard_of("bikes.txt", SHARD_COUNT)
    ledger = load_ledger(pipeline.processed, pipeline.layout.chunk_ledger(shard))
    verification = verify_shard(index, shard, ledger)
    assert not verification.passed
    assert verification.missing == [document_id("bikes.txt")]
    assert verification.actual_rows < verification.expected_rows
    # The planner notices too, and a run repairs it.
    assert shard in pipeline.plan().to_run
    pipeline.ingest()
    index.refresh()
    assert index.count("document = 'bikes.txt'") >= 1
    assert verify_shard(index, shard, ledger).passed


def test_workspace_and_dagster_cloud_yaml_load_the_same_code_location(tmp_path: Path) -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    cloud = yaml.safe_load((REPO_ROOT / "dagster_cloud.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert module == cloud["locations"][0]["code_source"]["module_name"]
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(REPO_ROOT / "workspace.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "DAGSTER_HOME": str(tmp_path),
            "LORECHAT_HOME": str(tmp_path),
        },
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr

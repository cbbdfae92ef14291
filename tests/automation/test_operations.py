"""Operations: retries, pools and run-queue limits as the instance and the assets declare them."""

from pathlib import Path

import dagster as dg
import yaml

from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.instance import open_instance, prepare_instance
from lorechat_pipeline.settings import load_settings


def test_instance_config_carries_queue_limits_pools_and_run_retries(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, max_concurrent_runs=3, embedding_concurrency=2)
    instance = open_instance(settings)
    storage = instance.event_log_storage
    assert storage.get_concurrency_info("embedding_provider").slot_count == 2
    assert storage.get_concurrency_info("vector_index_writes").slot_count == 1
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 3
    assert queue.tag_concurrency_limits == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    config = yaml.safe_load((tmp_path / "dagster" / "dagster.yaml").read_text())
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }
    assert config["telemetry"] == {"enabled": False}
    # Managed: a changed setting rewrites the file, and the pool follows.
    changed = load_settings(home=tmp_path, max_concurrent_runs=5, embedding_concurrency=4)
    prepare_instance(changed)
    assert "max_concurrent_runs: 5" in (tmp_path / "dagster" / "dagster.yaml").read_text()
    again = open_instance(changed)
    assert again.event_log_storage.get_concurrency_info("embedding_provider").slot_count == 4


def test_assets_retry_transient_failures_and_name_their_pools(tmp_path: Path) -> None:
    graph = build_definitions(load_settings(home=tmp_path)).resolve_asset_graph()
    pools = {}
    for name in ("raw_documents", "document_chunks", "chunk_embeddings", "vector_index"):
        assets_def = graph.get(dg.AssetKey(name)).assets_def
        policy = assets_def.op.retry_policy
        assert policy is not None
        assert policy.max_retries == 3
        assert policy.backoff == dg.Backoff.EXPONENTIAL
        assert policy.jitter == dg.Jitter.PLUS_MINUS
        pools[name] = assets_def.op.pool
    assert pools["chunk_embeddings"] == "embedding_provider"
    assert pools["vector_index"] == "vector_index_writes"
    assert graph.get(dg.AssetKey("index_alias")).assets_def.op.pool == "index_alias"

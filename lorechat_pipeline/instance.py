"""The local Dagster instance under $LORECHAT_HOME/dagster, shared by the CLI and `lorechat dev`."""

import os
from pathlib import Path

import dagster as dg
import yaml

from lorechat_pipeline.settings import LorechatSettings

MANAGED_HEADER = "# Managed by lorechat from LORECHAT_* settings; edits are overwritten.\n"

# Pools named by the assets; the embedding provider's limit comes from the settings.
EMBEDDING_POOL = "embedding_provider"
SINGLE_WRITER_POOLS = ("vector_index_writes", "index_alias")


def instance_config(settings: LorechatSettings) -> dict[str, object]:
    return {
        # SQLite storage in this folder; no telemetry from a local, offline tool.
        "telemetry": {"enabled": False},
        "concurrency": {
            "runs": {
                "max_concurrent_runs": settings.max_concurrent_runs,
                # Two runs of one shard at once would race on its catalog and ledgers.
                "tag_concurrency_limits": [
                    {
                        "key": "dagster/partition",
                        "value": {"applyLimitPerUniqueValue": True},
                        "limit": 1,
                    }
                ],
            },
            # Enforced by the run queue when a run starts, so a killed run never holds a slot.
            "pools": {"granularity": "run", "default_limit": 1},
        },
        # Queued runs start within a second of a slot freeing (the default checks every 5 s).
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
        # A crashed run worker is retried; a failed step already had its own retries.
        "run_retries": {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False},
        "run_monitoring": {"enabled": True},
    }


def prepare_instance(settings: LorechatSettings) -> Path:
    """Write the instance's dagster.yaml (if it changed) and return DAGSTER_HOME."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    text = MANAGED_HEADER + yaml.safe_dump(instance_config(settings), sort_keys=True)
    path = home / "dagster.yaml"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return home


def open_instance(settings: LorechatSettings) -> dg.DagsterInstance:
    home = prepare_instance(settings)
    os.environ.setdefault("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.from_config(str(home))
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        wanted = {EMBEDDING_POOL: settings.embedding_concurrency}
        wanted |= dict.fromkeys(SINGLE_WRITER_POOLS, 1)
        for pool, limit in wanted.items():
            if storage.get_concurrency_info(pool).slot_count != limit:
                storage.set_concurrency_slots(pool, limit)
    return instance

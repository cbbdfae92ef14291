"""Run requests over shards, shared by the sensors and the reconciliation schedule."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

# Dagster's tags for a run over a range of partitions (what a single-run backfill launches).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
SHARDS_TAG = "lorechat/shards"


def shards_run_request(
    shards: Sequence[str],
    *,
    run_key: str,
    tags: Mapping[str, str],
    run_config: Mapping[str, Any] | None = None,
) -> dg.RunRequest:
    """One run for every shard a tick found: the parser workers and the model warm up once.

    Partitions of a run form a contiguous range, so shards between the changed ones come
    along; they cost a look at their catalog and ledgers and nothing more.
    """
    ordered = sorted(shards)
    # The shards that changed, for people reading the run (the range may hold more).
    tags = {**tags, SHARDS_TAG: ",".join(ordered)}
    if len(ordered) == 1:
        return dg.RunRequest(
            run_key=run_key, partition_key=ordered[0], tags=tags, run_config=dict(run_config or {})
        )
    return dg.RunRequest(
        run_key=run_key,
        tags={**tags, PARTITION_RANGE_START_TAG: ordered[0], PARTITION_RANGE_END_TAG: ordered[-1]},
        run_config=dict(run_config or {}),
    )

"""Blue/green: a new index version is promoted by switching the alias once its checks pass.

`index_candidate` is the version this configuration builds, judged as a whole by two blocking
checks; `index_alias` runs only after both pass, so searches keep reading the current version
until the new one is complete and at least as good.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from lorechat_pipeline.core.evaluation import derive_golden_queries, evaluate, judge
from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.promotion import (
    check_candidate_parity,
    document_search,
    sample_chunks,
)
from lorechat_pipeline.core.vector_index import IndexNotFound
from lorechat_pipeline.defs.vectorization.assets import vector_index
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import ObjectStoreResource
from lorechat_pipeline.resources.promotion_config import PromotionConfig
from lorechat_pipeline.resources.vector_store import VectorStoreResource

ROW_COUNT_PARITY = "row_count_parity"
RETRIEVAL_QUALITY = "retrieval_quality"


@dg.asset(
    deps=[vector_index],
    group_name="promotion",
    kinds={"lancedb"},
    check_specs=[
        dg.AssetCheckSpec(
            ROW_COUNT_PARITY,
            asset="index_candidate",
            blocking=True,
            description="Every shard is complete and the rows are exactly the chunk set.",
        ),
        dg.AssetCheckSpec(
            RETRIEVAL_QUALITY,
            asset="index_candidate",
            blocking=True,
            description=(
                "Recall@k and MRR on the golden queries are not worse than the current "
                "version's by more than the configured margin."
            ),
        ),
    ],
    description=(
        "The index version this configuration (embedding model and chunker) builds, judged as a "
        "whole before it may replace the current version."
    ),
)
def index_candidate(
    context: dg.AssetExecutionContext,
    processed_store: ObjectStoreResource,
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
    promotion_config: PromotionConfig,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    started = time.perf_counter()
    model = embedder.get_embedder()
    manifest = ingestion_config.manifest(model)
    candidate = vector_store.open_for_write(manifest)
    current_table = vector_store.aliases().current_table()
    parity = check_candidate_parity(candidate, processed_store.open(), shard_names(SHARD_COUNT))
    current: VectorIndex | None = None
    if current_table and current_table != candidate.name:
        try:
            current = vector_store.open_version(current_table)
        except IndexNotFound:
            context.log.warning(f"the alias names {current_table}, which no longer exists")
    golden = promotion_config.golden_queries()
    golden_source = "configured"
    if golden is None:
        golden = derive_golden_queries(sample_chunks(current or candidate))
        golden_source = f"derived from {(current or candidate).name}"
    k = promotion_config.k
    candidate_quality = evaluate(document_search(candidate, model), golden, k)
    current_quality = (
        evaluate(document_search(current, embedder.embedder_for(current.manifest)), golden, k)
        if current is not None
        else None
    )
    verdict = judge(candidate_quality, current_quality, promotion_config.max_quality_drop)

    yield dg.MaterializeResult(
        metadata={
            "index_table": candidate.name,
            "current_table": current_table or "none",
            "embedding_model": manifest.embedding_model,
            "chunker": manifest.chunker_description,
            "rows": parity.actual_rows,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    yield dg.AssetCheckResult(
        check_name=ROW_COUNT_PARITY,
        passed=parity.passed,
        description=parity.describe(),
        metadata={
            "expected_rows": parity.expected_rows,
            "actual_rows": parity.actual_rows,
            "shards_behind": len(parity.shards_behind),
        },
    )
    yield dg.AssetCheckResult(
        check_name=RETRIEVAL_QUALITY,
        passed=verdict.passed,
        description=verdict.message,
        metadata={
            "golden_queries": golden_source,
            **{f"candidate_{n}": v for n, v in candidate_quality.as_metadata().items()},
            **(
                {f"current_{n}": v for n, v in current_quality.as_metadata().items()}
                if current_quality
                else {}
            ),
            "max_quality_drop": promotion_config.max_quality_drop,
        },
    )


@dg.asset(
    deps=[index_candidate],
    group_name="promotion",
    kinds={"lancedb"},
    pool="index_alias",
    description=(
        "The alias naming the index version searches read, switched atomically to the candidate "
        "once its checks pass. Replaced versions are dropped after the retention period."
    ),
)
def index_alias(
    ingestion_config: IngestionConfig,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
    promotion_config: PromotionConfig,
) -> dg.MaterializeResult:
    manifest = ingestion_config.manifest(embedder.get_embedder())
    aliases = vector_store.aliases()
    previous = aliases.current_table()
    target = vector_store.target_table(manifest)
    if previous != target:
        aliases.promote(target, reason="checks passed: row-count parity and retrieval quality")
    dropped = collect_expired_versions(vector_store, promotion_config)
    return dg.MaterializeResult(
        metadata={
            "current_table": target,
            "previous_table": previous or "none",
            "switched": previous != target,
            "versions_dropped": ", ".join(dropped) or "none",
        }
    )


def collect_expired_versions(
    vector_store: VectorStoreResource, promotion_config: PromotionConfig
) -> list[str]:
    """Drop the versions retired longer ago than the retention period, then forget them."""
    aliases = vector_store.aliases()
    alias = aliases.read()
    if alias is None:
        return []
    expired = alias.expired(promotion_config.retention, datetime.now(UTC))
    for table in expired:
        vector_store.drop_version(table)
    aliases.forget(expired)
    return expired

import dagster as dg

from lorechat_pipeline.defs.partitions import document_shards_partitions_def
from lorechat_pipeline.defs.promotion.assets import collect_expired_versions
from lorechat_pipeline.resources.promotion_config import PromotionConfig
from lorechat_pipeline.resources.vector_store import VectorStoreResource

# The whole graph for one shard: observe → chunk → embed → index, with the index checks. Steps
# run in the run's own process: a process per step would reload torch and the model each time.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingestion", "vectorization"),
    partitions_def=document_shards_partitions_def,
    executor_def=dg.in_process_executor,
    description="Bring one shard of the vector index in step with the source.",
)

promote_job = dg.define_asset_job(
    "promote_job",
    selection=dg.AssetSelection.groups("promotion"),
    executor_def=dg.in_process_executor,
    description=(
        "Judge the index version this configuration builds and, when its checks pass, switch "
        "the alias to it."
    ),
)


@dg.op(description="Drop index versions retired longer ago than the retention period.")
def drop_expired_index_versions(
    context: dg.OpExecutionContext,
    vector_store: VectorStoreResource,
    promotion_config: PromotionConfig,
) -> None:
    dropped = collect_expired_versions(vector_store, promotion_config)
    context.log.info(f"dropped index versions: {', '.join(dropped) or 'none'}")


@dg.job(description="Garbage-collect index versions past their retention period.")
def index_gc_job() -> None:
    drop_expired_index_versions()

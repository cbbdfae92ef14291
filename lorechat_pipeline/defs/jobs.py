import dagster as dg

from lorechat_pipeline.defs.partitions import document_shards_partitions_def

# The whole graph for one shard: observe → chunk → embed → index, with the index checks.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingestion", "vectorization"),
    partitions_def=document_shards_partitions_def,
    description="Bring one shard of the vector index in step with the source.",
)

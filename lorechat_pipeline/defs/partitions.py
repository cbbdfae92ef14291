import dagster as dg

from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names

# A fixed number of hash shards of the document key space: the partition count stays bounded
# whatever the corpus size, and work inside a shard is incremental per document.
document_shards_partitions_def = dg.StaticPartitionsDefinition(shard_names(SHARD_COUNT))

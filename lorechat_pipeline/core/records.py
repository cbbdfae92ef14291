"""Arrow schemas of the persisted chunk, embedding and index rows."""

import pyarrow as pa

CHUNK_FIELDS: list[pa.Field] = [
    pa.field("chunk_id", pa.string(), nullable=False),
    pa.field("document_id", pa.string(), nullable=False),
    pa.field("document", pa.string(), nullable=False),  # source key relative to the source root
    pa.field("collection", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("source_version", pa.string()),  # S3 version id, else the ETag
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("content_fp", pa.string(), nullable=False),  # content + sidecar: what was chunked
    pa.field("content_type", pa.string()),
    pa.field("ordinal", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("page_number", pa.int32()),
    pa.field("section", pa.string()),
    pa.field("element_types", pa.list_(pa.string())),
    pa.field("user_metadata", pa.string()),  # JSON object from the .metadata.json sidecar
    pa.field("chunker_version", pa.string(), nullable=False),
]

CHUNK_SCHEMA = pa.schema(CHUNK_FIELDS)


def embedding_schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
        ]
    )


def index_schema(dimension: int, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    return pa.schema(
        [
            *CHUNK_FIELDS,
            pa.field("embedding_model", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
        ],
        metadata=metadata,
    )

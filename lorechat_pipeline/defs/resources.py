"""Resources per environment, built from settings in one function (never at import time)."""

from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from lorechat_pipeline.core.backends.upstash_client import TOKEN_SETTING, URL_SETTING
from lorechat_pipeline.core.storage import is_s3_uri, split_s3_uri
from lorechat_pipeline.resources.embedder import (
    BedrockEmbedderResource,
    EmbedderResource,
    SentenceTransformerEmbedderResource,
)
from lorechat_pipeline.resources.event_queue import EventQueueResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import (
    LocalFolderStore,
    ObjectStoreResource,
    S3BucketStore,
)
from lorechat_pipeline.resources.promotion_config import PromotionConfig
from lorechat_pipeline.resources.vector_store import (
    LanceDBVectorStore,
    UpstashVectorStore,
    VectorStoreResource,
)
from lorechat_pipeline.settings import (
    EmbedderKind,
    LorechatSettings,
    VectorStoreKind,
    secret_variable_set,
)


def _secret(name: str) -> Any:
    # Resolved at launch and hidden in the UI; absent means boto3's own chain (an ECS task role).
    return dg.EnvVar(name) if secret_variable_set(name) else None


def s3_resource(settings: LorechatSettings) -> S3Resource:
    return S3Resource(
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.aws_region,
        max_attempts=settings.s3_max_attempts,
        aws_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_secret("AWS_SESSION_TOKEN"),
    )


def object_store(uri: str, settings: LorechatSettings) -> ObjectStoreResource:
    if is_s3_uri(uri):
        bucket, prefix = split_s3_uri(uri)
        return S3BucketStore(bucket=bucket, prefix=prefix, s3=s3_resource(settings))
    return LocalFolderStore(path=uri)


def promotion_config(settings: LorechatSettings) -> PromotionConfig:
    golden_store, golden_key = None, ""
    if settings.golden_queries:
        uri = settings.golden_queries
        parent, _, golden_key = uri.rstrip("/").rpartition("/")
        golden_store = object_store(parent or ".", settings)
    return PromotionConfig(
        golden_queries_store=golden_store,
        golden_queries_key=golden_key,
        max_quality_drop=settings.promotion_max_quality_drop,
        k=settings.promotion_k,
        retention_hours=settings.index_retention_hours,
    )


def embedder_resource(settings: LorechatSettings) -> EmbedderResource:
    if settings.backends.embedder is EmbedderKind.BEDROCK:
        return BedrockEmbedderResource(
            model=settings.bedrock_embedding_model_id,
            dimension=settings.bedrock_embedding_dimension,
            normalize=settings.bedrock_embedding_normalize,
            concurrency=settings.bedrock_embedding_concurrency,
            aws_region=settings.aws_region,
            bedrock_endpoint_url=settings.bedrock_endpoint_url,
        )
    return SentenceTransformerEmbedderResource(
        model_path=settings.embedding_model_path,
        batch_size=settings.embedding_batch_size,
        max_tokens=settings.embedding_max_tokens,
        encoder=settings.local_encoder,
        onnx_cache_dir=str(settings.onnx_cache_path),
        threads=settings.embedding_threads,
        own_process=settings.encoder_process,
        aws_region=settings.aws_region,
        bedrock_endpoint_url=settings.bedrock_endpoint_url,
    )


def vector_store_resource(settings: LorechatSettings) -> VectorStoreResource:
    if settings.backends.vector_store is VectorStoreKind.UPSTASH:
        return UpstashVectorStore(
            # The URL from the settings when it is only in .env; the token only ever as EnvVar.
            url=_secret(URL_SETTING) or settings.upstash_vector_rest_url,
            token=_secret(TOKEN_SETTING),
            secret_id=settings.upstash_secret_id,
            aws_region=settings.aws_region,
            secrets_endpoint_url=settings.secrets_endpoint_url,
            table_name=settings.index_table,
        )
    return LanceDBVectorStore(
        uri=settings.index_location,
        table_name=settings.index_table,
        s3_endpoint_url=settings.s3_endpoint_url,
        aws_region=settings.aws_region,
        aws_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
    )


def build_resources(settings: LorechatSettings) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "source": object_store(settings.source_uri, settings),
        "processed_store": object_store(settings.processed_uri, settings),
        "ingestion_config": IngestionConfig(
            chunk_max_characters=settings.chunk_max_characters,
            chunk_new_after_characters=settings.chunk_new_after_characters,
            chunk_overlap=settings.chunk_overlap,
            chunk_combine_under_characters=settings.chunk_combine_under_characters,
            max_document_bytes=settings.max_document_bytes,
            parse_timeout_seconds=settings.parse_timeout_seconds,
            parse_workers=settings.parse_workers,
            parse_memory_limit_mb=settings.parse_memory_limit_mb,
            max_inflated_bytes=settings.max_inflated_bytes,
            max_compression_ratio=settings.max_compression_ratio,
            max_document_characters=settings.max_document_characters,
            max_document_chunks=settings.max_document_chunks,
            ann_index_min_rows=settings.ann_index_min_rows,
            deletion_guard_share=settings.deletion_guard_share,
            deletion_guard_min_documents=settings.deletion_guard_min_documents,
            emit_cloudwatch_metrics=settings.emits_cloudwatch_metrics,
        ),
        "embedder": embedder_resource(settings),
        "promotion_config": promotion_config(settings),
        "vector_store": vector_store_resource(settings),
    }
    if settings.sqs_queue_url:
        resources["event_queue"] = EventQueueResource(
            queue_url=settings.sqs_queue_url,
            endpoint_url=settings.sqs_endpoint_url or settings.s3_endpoint_url,
            region_name=settings.aws_region,
            aws_access_key_id=_secret("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_secret("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=_secret("AWS_SESSION_TOKEN"),
        )
    return resources

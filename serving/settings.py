"""The serving container's configuration: `LORECHAT_*` variables (and `.env`), read here only.

It shares the index location and embedder settings with the pipeline (same variable names), so a
serving container and the code location pointed at the same environment agree on the index.
"""

import hashlib
import ipaddress
import json
import secrets
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lorechat_pipeline.core.backends.upstash_client import TOKEN_SETTING, URL_SETTING
from lorechat_pipeline.core.bedrock_embedding import TITAN_V2
from lorechat_pipeline.core.deployment import (
    Backends,
    EmbedderKind,
    Environment,
    VectorStoreKind,
    backends_for,
)


class GeneratorKind(StrEnum):
    NONE = "none"  # extractive answers: the best passages with their citations
    OPENAI = "openai"  # any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp)
    BEDROCK = "bedrock"  # Amazon Bedrock's Converse API


class QueryEncoder(StrEnum):
    ONNX = "onnx"  # onnxruntime on an export of the model: no torch in the image
    TORCH = "torch"  # sentence-transformers, exactly as the pipeline embeds


class ApiKey(BaseModel):
    """One caller: the SHA-256 of its key (never the key), and the collections it may read."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    collections: list[str] = Field(default_factory=lambda: ["*"])
    requests_per_minute: int | None = Field(default=None, ge=1)

    def allows(self, collection: str) -> bool:
        return "*" in self.collections or collection in self.collections


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    """A random key with 256 bits of entropy, prefixed so it is recognisable in a leak scan."""
    return "lck_" + secrets.token_urlsafe(32)


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORECHAT_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(default=Path(".lorechat"))
    # As in the pipeline: the environment chooses the backends (core/deployment.py), and
    # LORECHAT_VECTOR_STORE / LORECHAT_EMBEDDER override it.
    environment: Environment = Environment.LOCAL
    vector_store: VectorStoreKind | None = None
    embedder: EmbedderKind | None = None
    # Upstash Vector, under Upstash's own names; or both from a Secrets Manager secret.
    upstash_vector_rest_url: str | None = Field(
        default=None, validation_alias=AliasChoices(URL_SETTING, "upstash_vector_rest_url")
    )
    upstash_vector_rest_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(TOKEN_SETTING, "upstash_vector_rest_token")
    )
    upstash_secret_id: str | None = None
    secrets_endpoint_url: str | None = None
    # Queries embedded by Bedrock when LORECHAT_EMBEDDER=bedrock (the pipeline's settings).
    bedrock_embedding_model_id: str = TITAN_V2
    bedrock_embedding_dimension: int = Field(default=1024, ge=1)
    bedrock_embedding_normalize: bool = True
    index_uri: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    embedding_model_path: str | None = None
    embedding_max_tokens: int | None = Field(default=None, ge=4)
    # onnx: the ONNX export of the model (same vectors, a fraction of the time, no torch).
    query_encoder: QueryEncoder = QueryEncoder.ONNX
    # An export to use (the image ships one); empty: a cache under LORECHAT_HOME, made on first use.
    query_encoder_dir: Path | None = None
    # Threads per query; concurrent requests run side by side on the other cores.
    query_encoder_threads: int = Field(default=1, ge=1)
    # Searches answered at once and how long one waits for a free slot before it is turned away
    # with 429 and Retry-After (a burst must not queue up everyone's latency). One at a time by
    # default: a search already spreads over the cores (full-text search beside encoding) and
    # its Python part holds the GIL, so under the soak two side by side took about twice as long
    # each for 7% more answers, and the answered p99 went from 3.0x to 5.5x the unloaded one
    # (docs/reliability.md). Raise it where throughput matters more than tail latency: queries
    # waiting together are then also encoded together.
    max_searches_in_flight: int = Field(default=1, ge=1)
    search_queue_seconds: float = Field(default=0.02, ge=0.0)
    # IVF partitions a dense search probes at least (more only when a filter needs them).
    search_nprobes: int = Field(default=8, ge=1)
    # Memory for an in-memory copy of the served version's vectors (0: LanceDB answers every
    # search). 256 MB holds ~170k chunks of 384 dimensions; larger versions stay on LanceDB.
    resident_vectors_mb: int = Field(default=256, ge=0)
    # How often the alias is re-read: a promotion is served within this many seconds.
    alias_check_seconds: float = Field(default=5.0, ge=0.0)
    # A promoted version is served once its in-memory copy is built, or after this long.
    switch_warm_up_seconds: float = Field(default=30.0, ge=0.0)

    # Server processes sharing the port, each with its own event loop, query encoder and copy of
    # the served version. One process runs its Python on one core at a time (the GIL): on 2
    # cores two processes answered ~30% more searches than one (docs/benchmarks.md). Rate
    # limits and metrics are shared by the processes; admission control (max_searches_in_flight)
    # and the copy's memory (resident_vectors_mb) are per process.
    workers: int = Field(default=1, ge=1, le=64)
    # Set by the supervising process for its workers (never by hand): where they share their
    # rate-limit buckets and metrics.
    worker_state_dir: Path | None = None

    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=8000, ge=1, le=65535)
    # JSON list of {"name", "sha256", "collections", "requests_per_minute"}; or a file of the same.
    api_keys: list[ApiKey] = Field(default_factory=list)
    api_keys_file: Path | None = None
    rate_limit_per_minute: int = Field(default=120, ge=1)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    max_query_characters: int = Field(default=2000, ge=1)
    max_k: int = Field(default=50, ge=1, le=1000)
    cors_origins: list[str] = Field(default_factory=list)

    generator: GeneratorKind = GeneratorKind.NONE
    openai_base_url: str | None = None  # e.g. http://127.0.0.1:8080/v1
    openai_model: str = "default"
    openai_api_key: SecretStr | None = None
    bedrock_model_id: str = "amazon.nova-micro-v1:0"
    # A VPC interface endpoint or a test double; empty: the regional endpoint.
    bedrock_endpoint_url: str | None = None
    generation_max_tokens: int = Field(default=512, ge=16)
    generation_timeout_seconds: float = Field(default=60.0, gt=0)
    # How long a chat keeps asking a generator that refuses connections or answers 503 (a
    # restart, a model loading) before it fails with 502.
    generation_retry_seconds: float = Field(default=15.0, ge=0)

    # Direct client uploads into the source bucket (presigned POST policies).
    upload_bucket: str | None = None
    upload_prefix: str = ""
    upload_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    upload_expiry_seconds: int = Field(default=300, ge=30, le=3600)
    upload_content_types: list[str] = Field(
        default_factory=lambda: [
            "application/pdf",
            "text/html",
            "text/markdown",
            "text/plain",
            "text/csv",
            "message/rfc822",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ]
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @property
    def backends(self) -> Backends:
        return backends_for(self.environment, self.vector_store, self.embedder)

    @property
    def index_location(self) -> str:
        return self.index_uri or str(self.home.expanduser().resolve() / "index")

    def all_api_keys(self) -> list[ApiKey]:
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            payload = json.loads(self.api_keys_file.read_text())
            keys += [ApiKey.model_validate(item) for item in payload]
        return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UnsafeBinding(RuntimeError):
    pass


def require_safe_binding(settings: ServingSettings, host: str) -> None:
    """Without API keys the API is open: it may then listen on loopback only."""
    if not settings.all_api_keys() and not is_loopback(host):
        raise UnsafeBinding(
            f"refusing to listen on {host} without API keys: anyone could read the index. "
            "Configure LORECHAT_API_KEYS (or LORECHAT_API_KEYS_FILE; `lorechat keys create` "
            "makes one), or listen on 127.0.0.1."
        )

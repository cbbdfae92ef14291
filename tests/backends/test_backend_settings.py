"""One switch for the environment: LORECHAT_ENVIRONMENT chooses the backends in one place, the
explicit variables override it, the pipeline's resources and the serving settings follow, and
secrets reach Dagster only as dg.EnvVar."""

import re
from pathlib import Path

import dagster as dg
import pydantic
import pytest
import yaml

from lorechat_pipeline.core.deployment import EmbedderKind, Environment, VectorStoreKind
from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.resources.embedder import (
    BedrockEmbedderResource,
    SentenceTransformerEmbedderResource,
)
from lorechat_pipeline.resources.vector_store import LanceDBVectorStore, UpstashVectorStore
from lorechat_pipeline.settings import LorechatSettings, load_settings
from serving.settings import ServingSettings
from tests.conftest import REPO_ROOT

TOKEN = "AXsettings-token-5e8a1b"
VARIABLES = (
    "LORECHAT_ENVIRONMENT",
    "LORECHAT_VECTOR_STORE",
    "LORECHAT_EMBEDDER",
    "LORECHAT_SOURCE",
    "LORECHAT_PROCESSED",
    "LORECHAT_INDEX_URI",
    "LORECHAT_UPSTASH_SECRET_ID",
    "UPSTASH_VECTOR_REST_URL",
    "UPSTASH_VECTOR_REST_TOKEN",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LORECHAT_HOME", str(tmp_path))
    return monkeypatch


def aws(env: pytest.MonkeyPatch) -> None:
    env.setenv("LORECHAT_ENVIRONMENT", "aws")
    env.setenv("LORECHAT_SOURCE", "s3://docs/kb")
    env.setenv("LORECHAT_PROCESSED", "s3://work/processed")
    env.setenv("UPSTASH_VECTOR_REST_URL", "https://lorechat-us1-vector.upstash.io")
    env.setenv("UPSTASH_VECTOR_REST_TOKEN", TOKEN)


def test_local_is_the_default(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.environment is Environment.LOCAL
    assert settings.backends.vector_store is VectorStoreKind.LANCEDB
    assert settings.backends.embedder is EmbedderKind.LOCAL
    resources = build_definitions(settings).resources
    assert isinstance(resources["vector_store"], LanceDBVectorStore)
    assert isinstance(resources["embedder"], SentenceTransformerEmbedderResource)
    assert ServingSettings().backends == settings.backends


def test_aws_chooses_upstash_and_bedrock_with_secrets_as_env_vars(env: pytest.MonkeyPatch) -> None:
    aws(env)
    env.setenv("LORECHAT_BEDROCK_EMBEDDING_DIMENSION", "512")
    env.setenv("LORECHAT_BEDROCK_EMBEDDING_CONCURRENCY", "8")
    settings = load_settings()
    assert settings.backends.vector_store is VectorStoreKind.UPSTASH
    assert settings.backends.embedder is EmbedderKind.BEDROCK
    # The token is not configuration: the settings never hold it.
    assert TOKEN not in settings.model_dump_json()
    assert TOKEN not in repr(settings)
    definitions = build_definitions(settings)
    resources = definitions.resources
    store, embedder = resources["vector_store"], resources["embedder"]
    assert isinstance(store, UpstashVectorStore)
    assert isinstance(store.token, dg.EnvVar)
    assert store.token == "UPSTASH_VECTOR_REST_TOKEN"  # the name, resolved at launch
    assert isinstance(store.url, dg.EnvVar)
    assert isinstance(embedder, BedrockEmbedderResource)
    assert (embedder.model, embedder.dimension, embedder.concurrency) == (
        "amazon.titan-embed-text-v2:0",
        512,
        8,
    )
    assert embedder.model_id() == "bedrock:amazon.titan-embed-text-v2:0@512"
    assert definitions.resolve_job_def("ingest_job") is not None
    graph = definitions.resolve_asset_graph()
    assert graph.get(dg.AssetKey("vector_index")).kinds == {"upstash"}
    assert "bedrock" in graph.get(dg.AssetKey("chunk_embeddings")).kinds
    serving = ServingSettings()
    assert serving.backends == settings.backends
    assert serving.upstash_vector_rest_token is not None
    assert TOKEN not in repr(serving)


def test_explicit_variables_override_the_environment(env: pytest.MonkeyPatch) -> None:
    aws(env)
    env.setenv("LORECHAT_EMBEDDER", "local")
    env.setenv("LORECHAT_VECTOR_STORE", "lancedb")
    with pytest.raises(pydantic.ValidationError, match="LORECHAT_INDEX_URI must be an s3://"):
        load_settings()  # LanceDB in AWS lives on S3
    env.setenv("LORECHAT_INDEX_URI", "s3://work/index")
    settings = load_settings()
    resources = build_definitions(settings).resources
    assert isinstance(resources["vector_store"], LanceDBVectorStore)
    assert resources["vector_store"].uri == "s3://work/index"
    assert isinstance(resources["embedder"], SentenceTransformerEmbedderResource)
    env.delenv("LORECHAT_SOURCE")
    with pytest.raises(pydantic.ValidationError, match="LORECHAT_SOURCE must be an s3://"):
        load_settings()


def readme_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"^## Deploying on AWS and Dagster\+\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README.md has no 'Deploying on AWS and Dagster+' section"
    return match.group(1)


def test_dagster_cloud_yaml_names_the_code_location_and_documented_variables() -> None:
    config = yaml.safe_load((REPO_ROOT / "dagster_cloud.yaml").read_text())
    (location,) = config["locations"]
    assert location["code_source"]["module_name"] == "lorechat_pipeline.definitions"
    section = readme_section()
    fields = {f"LORECHAT_{name.upper()}" for name in LorechatSettings.model_fields}
    for entry in location["container_context"]["ecs"]["env_vars"]:
        name = entry.split("=", 1)[0]
        assert f"`{name}`" in section, f"{name} is not documented in the README"
        assert name in fields or not name.startswith("LORECHAT_"), name
    for name in (
        *VARIABLES,
        "LORECHAT_BEDROCK_EMBEDDING_MODEL_ID",
        "LORECHAT_SECRETS_ENDPOINT_URL",
    ):
        assert f"`{name}`" in section, f"{name} is not documented in the README"

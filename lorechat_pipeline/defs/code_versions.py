"""Code versions tied to configuration, so a chunker or model change marks exactly the stale
partitions in the UI (and "Materialize stale" or a backfill rebuilds them)."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from lorechat_pipeline.core.ids import fingerprint
from lorechat_pipeline.resources.embedder import BedrockEmbedderResource, EmbedderResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.vector_store import UpstashVectorStore

# Bump when observation changes what it records for the same bytes.
OBSERVATION_VERSION = "observe-1"


def code_versions(resources: dict[str, Any]) -> dict[str, str]:
    config: IngestionConfig = resources["ingestion_config"]
    embedder: EmbedderResource = resources["embedder"]
    chunker = f"chunker-{config.chunking_options().fingerprint()}"
    model = f"model-{fingerprint(embedder.model_version())}"
    table = getattr(resources["vector_store"], "table_name", None) or "derived"
    index = f"index-{fingerprint(chunker, model, table)}"
    return {
        "raw_documents": OBSERVATION_VERSION,
        "document_chunks": chunker,
        # The chunks' own data version carries chunker changes downstream.
        "chunk_embeddings": model,
        "vector_index": index,
        "index_candidate": index,
        "index_alias": index,
    }


def backend_kinds(resources: dict[str, Any]) -> dict[str, set[str]]:
    """The UI's kind tags name the backends this deployment runs."""
    store = "upstash" if isinstance(resources["vector_store"], UpstashVectorStore) else "lancedb"
    model = "bedrock" if isinstance(resources["embedder"], BedrockEmbedderResource) else "pytorch"
    return {
        "chunk_embeddings": {model, "parquet"},
        "vector_index": {store},
        "index_candidate": {store},
        "index_alias": {store},
    }


def with_code_versions(
    assets: Sequence[dg.AssetsDefinition], resources: dict[str, Any]
) -> list[dg.AssetsDefinition]:
    versions = code_versions(resources)
    kinds = backend_kinds(resources)
    return [
        asset.map_asset_specs(
            lambda spec: spec.replace_attributes(
                code_version=versions.get(spec.key.to_user_string(), spec.code_version),
                kinds=kinds.get(spec.key.to_user_string(), spec.kinds),
            )
        )
        for asset in assets
    ]

"""The query embedder the app runs: the ONNX export of the index's model (default), or torch.

The export is looked up in LORECHAT_QUERY_ENCODER_DIR (the image ships one made at build time)
or in a cache under LORECHAT_HOME, and made there on first use when torch is installed.
"""

import logging
import os
from pathlib import Path

from lorechat_pipeline.core.bedrock_embedding import BedrockEmbedder
from lorechat_pipeline.core.deployment import EmbedderKind
from lorechat_pipeline.core.embedding import (
    Embedder,
    SentenceTransformerEmbedder,
    embedder_model_id,
)
from lorechat_pipeline.core.onnx_embedding import (
    OnnxEmbedder,
    OnnxExportError,
    OnnxExportInfo,
    export_atomically,
    export_cache_folder,
    valid_export,
)
from serving.settings import QueryEncoder, ServingSettings

logger = logging.getLogger(__name__)


def export_folder(settings: ServingSettings, model_id: str) -> Path:
    if settings.query_encoder_dir is not None:
        return settings.query_encoder_dir
    # The cache ingestion exports into too (LORECHAT_ONNX_CACHE_DIR there; the home's default).
    return export_cache_folder(settings.home / "query-encoder", model_id)


def build_query_embedder(settings: ServingSettings) -> Embedder:
    if settings.backends.embedder is EmbedderKind.BEDROCK:
        # The index's vectors came from Bedrock: so do the queries' (one call per query).
        return BedrockEmbedder.create(
            model=settings.bedrock_embedding_model_id,
            dimension=settings.bedrock_embedding_dimension,
            normalize=settings.bedrock_embedding_normalize,
            concurrency=1,
            region=settings.aws_region,
            endpoint_url=settings.bedrock_endpoint_url,
        )
    if settings.query_encoder is QueryEncoder.TORCH:
        return SentenceTransformerEmbedder(
            settings.embedding_model_path, max_tokens=settings.embedding_max_tokens
        )
    expected = embedder_model_id(settings.embedding_model_path, settings.embedding_max_tokens)
    folder = export_folder(settings, expected)
    found: OnnxExportInfo | None = valid_export(folder)  # None: missing, partial or corrupt
    if found is not None and found.model_id != expected:
        raise OnnxExportError(
            f"{folder} holds an export of {found.model_id}, but the configured model is "
            f"{expected}: point LORECHAT_QUERY_ENCODER_DIR at an export of it (or remove the "
            "folder to export again)"
        )
    if found is None:
        export_into(folder, settings)
    return OnnxEmbedder(folder, threads=settings.query_encoder_threads)


def concurrent_encodes(embedder: Embedder) -> int:
    """How many queries to encode at once without oversubscribing the cores."""
    if isinstance(embedder, OnnxEmbedder):
        return max(1, (os.cpu_count() or 1) // embedder.threads)
    if isinstance(embedder, BedrockEmbedder):
        return 16  # remote calls: waiting on the network, not the cores
    return 1


def export_into(folder: Path, settings: ServingSettings) -> None:
    try:
        import torch  # noqa: F401 - only to tell a missing torch from a failed export
    except ImportError as error:
        raise OnnxExportError(
            f"no ONNX query encoder in {folder}, and torch is not installed to export one: set "
            "LORECHAT_QUERY_ENCODER_DIR to an export (`python -m "
            "lorechat_pipeline.core.onnx_embedding DIR` where torch is installed), or "
            "LORECHAT_QUERY_ENCODER=torch"
        ) from error
    logger.info("exporting the query encoder to %s (once)", folder)
    # Exported beside the destination and moved in whole: a concurrent start never reads half.
    export_atomically(folder, settings.embedding_model_path, settings.embedding_max_tokens)

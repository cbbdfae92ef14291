"""Embedding providers: the local model (onnxruntime or torch) and Amazon Bedrock, one interface."""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from lorechat_pipeline.core.bedrock_embedding import (
    TITAN_V2,
    BedrockEmbedder,
    bedrock_model_id,
    is_bedrock_model_id,
)
from lorechat_pipeline.core.deployment import LocalEncoder
from lorechat_pipeline.core.embedding import (
    Embedder,
    SentenceTransformerEmbedder,
    embedder_model_id,
)
from lorechat_pipeline.core.encoder_process import ProcessEmbedder
from lorechat_pipeline.core.host import usable_cores
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.onnx_embedding import OnnxEmbedder, ensure_export, export_cache_folder
from lorechat_pipeline.core.openvino_embedding import OpenVinoEmbedder


class EmbedderResource(dg.ConfigurableResource, ABC):
    # Where a Bedrock embedder is rebuilt from a manifest (whichever embedder is configured).
    aws_region: str | None = None
    bedrock_endpoint_url: str | None = None

    @abstractmethod
    def get_embedder(self) -> Embedder: ...

    def embedder_for(self, manifest: IndexManifest) -> Embedder:
        """The embedder that made an index's vectors: this one, or the model it names."""
        configured = self.get_embedder()
        if manifest.embedding_model == configured.model_id:
            return configured
        if is_bedrock_model_id(manifest.embedding_model):
            return BedrockEmbedder.for_model_id(
                manifest.embedding_model,
                normalize=manifest.normalized,
                region=self.aws_region,
                endpoint_url=self.bedrock_endpoint_url,
            )
        return SentenceTransformerEmbedder.for_model_id(manifest.embedding_model)

    @abstractmethod
    def model_id(self) -> str:
        """The model id an index built by this embedder records, known without loading it."""

    def model_version(self) -> str:
        """What identifies the vectors this embedder makes (a code version for the UI)."""
        return f"{self.model_id()};normalized;cosine"


class SentenceTransformerEmbedderResource(EmbedderResource):
    """The local model on CPU; by default the all-MiniLM-L6-v2 packaged on PyPI, run by OpenVINO
    on an ONNX export of it (made once with torch, cached in `onnx_cache_dir`; bfloat16 where
    the CPU has it), by onnxruntime on the same export (`encoder="onnx"`) or by
    sentence-transformers (`encoder="torch"`). Same vectors, same model id every way."""

    model_path: str | None = None
    batch_size: int = 16
    # Tokens per chunk the model reads (None: the model's own limit, 256 for MiniLM).
    max_tokens: int | None = None
    encoder: LocalEncoder = LocalEncoder.OPENVINO
    # Exports, one folder per model (required for the onnx encoder).
    onnx_cache_dir: str | None = None
    # Threads of one encode (0: one per core).
    threads: int = 0
    # openvino and onnx encoders: encode in a child process (one per configuration and
    # process), where the pipeline's Python threads cannot hold the encoder up.
    own_process: bool = True

    _embedder: Any = PrivateAttr(default=None)

    def get_embedder(self) -> Embedder:
        if self.encoder is LocalEncoder.TORCH:
            return SentenceTransformerEmbedder(
                self.model_path, batch_size=self.batch_size, max_tokens=self.max_tokens
            )
        if self._embedder is None:  # one session per resource (the export is read once)
            if self.onnx_cache_dir is None:
                raise ValueError(f"the {self.encoder} encoder needs onnx_cache_dir")
            folder = export_cache_folder(Path(self.onnx_cache_dir), self.model_id())
            ensure_export(folder, self.model_path, self.max_tokens)
            threads = self.threads or usable_cores()
            if self.own_process:
                self._embedder = ProcessEmbedder(
                    folder, runner=self.encoder, threads=threads, batch_size=self.batch_size
                )
            else:
                runner = OpenVinoEmbedder if self.encoder is LocalEncoder.OPENVINO else OnnxEmbedder
                self._embedder = runner(folder, threads=threads, batch_size=self.batch_size)
        embedder: Embedder = self._embedder
        return embedder

    def model_id(self) -> str:
        return embedder_model_id(self.model_path, self.max_tokens)


class BedrockEmbedderResource(EmbedderResource):
    """Amazon Bedrock `invoke_model` (Titan Text Embeddings v2 by default); credentials from
    boto3's chain (the task role in AWS). Steps that embed share the `embedding_provider` pool,
    so runs together never exceed the account's quota by more than `concurrency` per slot."""

    model: str = TITAN_V2
    dimension: int = 1024
    normalize: bool = True
    concurrency: int = 4

    _embedder: Any = PrivateAttr(default=None)

    def get_embedder(self) -> Embedder:
        if self._embedder is None:  # one client (and its connection pool) per resource
            self._embedder = BedrockEmbedder.create(
                model=self.model,
                dimension=self.dimension,
                normalize=self.normalize,
                concurrency=self.concurrency,
                region=self.aws_region,
                endpoint_url=self.bedrock_endpoint_url,
            )
        embedder: Embedder = self._embedder
        return embedder

    def model_id(self) -> str:
        return bedrock_model_id(self.model, self.dimension)

    def model_version(self) -> str:
        return f"{self.model_id()};{'normalized' if self.normalize else 'raw'};cosine"

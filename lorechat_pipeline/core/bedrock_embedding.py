"""Amazon Bedrock embeddings (Titan Text Embeddings v2 by default) behind the Embedder interface.

Titan takes one text per `invoke_model` call, so a batch is spread over a small thread pool
(bounded: Bedrock's per-account request quota is what throttles first). Throttling and
service-unavailable errors are retried with bounded exponential backoff and full jitter; botocore's
own retries are turned off so the two policies never multiply.

The model id an index records is `bedrock:<model>@<dimension>` (e.g.
`bedrock:amazon.titan-embed-text-v2:0@1024`): the manifest names exactly what made the vectors,
and `BedrockEmbedder.for_model_id` rebuilds the same embedder from it.

No dagster or unstructured import: the serving container embeds queries with this module.
"""

import json
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lorechat_pipeline.core.backends.retry import Backoff
from lorechat_pipeline.core.embedding import Embedder

logger = logging.getLogger(__name__)

BEDROCK_PREFIX = "bedrock:"
TITAN_V2 = "amazon.titan-embed-text-v2:0"
TITAN_V2_DIMENSIONS = (256, 512, 1024)
TITAN_V1_DIMENSION = 1536
RETRYABLE_CODES = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "ModelNotReadyException",
    "InternalServerException",
    "TooManyRequestsException",
}


class EmbeddingFailed(RuntimeError):
    pass


def bedrock_model_id(model: str, dimension: int) -> str:
    """The id an index records for a Bedrock model, known without calling Bedrock."""
    return f"{BEDROCK_PREFIX}{model}@{dimension}"


def is_bedrock_model_id(model_id: str) -> bool:
    return model_id.startswith(BEDROCK_PREFIX)


def parse_bedrock_model_id(model_id: str) -> tuple[str, int]:
    """(Bedrock model id, dimension): the inverse of bedrock_model_id."""
    if not is_bedrock_model_id(model_id):
        raise ValueError(f"not a Bedrock embedding model id: {model_id!r}")
    model, separator, dimension = model_id[len(BEDROCK_PREFIX) :].rpartition("@")
    if not separator or not dimension.isdigit():
        raise ValueError(f"a Bedrock model id ends with @<dimension>: {model_id!r}")
    return model, int(dimension)


def _is_titan_v2(model: str) -> bool:
    return "titan-embed-text-v2" in model


def _is_titan_v1(model: str) -> bool:
    return "titan-embed-text-v1" in model


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


class BedrockEmbedder(Embedder):
    def __init__(
        self,
        client: Any,
        *,
        model: str = TITAN_V2,
        dimension: int = 1024,
        normalize: bool = True,
        concurrency: int = 4,
        backoff: Backoff | None = None,
    ) -> None:
        if _is_titan_v2(model) and dimension not in TITAN_V2_DIMENSIONS:
            raise ValueError(
                f"{model} makes vectors of {', '.join(map(str, TITAN_V2_DIMENSIONS))} dimensions, "
                f"not {dimension}"
            )
        if _is_titan_v1(model) and dimension != TITAN_V1_DIMENSION:
            raise ValueError(f"{model} makes {TITAN_V1_DIMENSION}-d vectors only")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.model = model
        self.dimension = dimension
        self.normalized = normalize
        self.model_id = bedrock_model_id(model, dimension)
        self.concurrency = concurrency
        self.backoff = backoff or Backoff(attempts=6, base_seconds=0.5, cap_seconds=20.0)
        self._tokens = 0
        self._tokens_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BedrockEmbedder(model_id={self.model_id!r}, concurrency={self.concurrency})"

    @classmethod
    def create(
        cls,
        *,
        model: str = TITAN_V2,
        dimension: int = 1024,
        normalize: bool = True,
        concurrency: int = 4,
        region: str | None = None,
        endpoint_url: str | None = None,
        backoff: Backoff | None = None,
    ) -> "BedrockEmbedder":
        """With its own bedrock-runtime client (credentials from the usual AWS chain)."""
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # ours are the retries
            max_pool_connections=max(10, concurrency),
        )
        client = boto3.client(
            "bedrock-runtime", region_name=region, endpoint_url=endpoint_url, config=config
        )
        return cls(
            client,
            model=model,
            dimension=dimension,
            normalize=normalize,
            concurrency=concurrency,
            backoff=backoff,
        )

    @classmethod
    def for_model_id(
        cls, model_id: str, *, normalize: bool = True, **options: Any
    ) -> "BedrockEmbedder":
        """The embedder that made an index's vectors, from the model id its manifest records."""
        model, dimension = parse_bedrock_model_id(model_id)
        return cls.create(model=model, dimension=dimension, normalize=normalize, **options)

    @property
    def input_tokens(self) -> int:
        """Input tokens Bedrock reported (inputTextTokenCount) across all calls so far."""
        return self._tokens

    def request_body(self, text: str) -> dict[str, Any]:
        if _is_titan_v1(self.model):
            return {"inputText": text}
        return {"inputText": text, "dimensions": self.dimension, "normalize": self.normalized}

    def _invoke(self, text: str) -> np.ndarray:
        body = json.dumps(self.request_body(text))
        for attempt in range(self.backoff.attempts):
            try:
                response = self.client.invoke_model(
                    modelId=self.model,
                    body=body,
                    contentType="application/json",
                    accept="application/json",
                )
            except Exception as error:
                code = _error_code(error)
                if code not in RETRYABLE_CODES:
                    raise EmbeddingFailed(f"Bedrock {self.model}: {error}") from error
                if attempt + 1 >= self.backoff.attempts:
                    raise EmbeddingFailed(
                        f"Bedrock {self.model} still answered {code} after "
                        f"{self.backoff.attempts} attempts; giving up (raise the account's "
                        "on-demand quota or lower the embedding concurrency)"
                    ) from error
                waited = self.backoff.wait(attempt)
                logger.warning(
                    "Bedrock %s: %s; retry %d/%d in %.2fs",
                    self.model,
                    code,
                    attempt + 1,
                    self.backoff.attempts - 1,
                    waited,
                )
                continue
            payload = json.loads(response["body"].read())
            vector = np.asarray(payload["embedding"], dtype=np.float32)
            if vector.shape != (self.dimension,):
                raise EmbeddingFailed(
                    f"Bedrock {self.model} returned {vector.shape[0]} dimensions, "
                    f"expected {self.dimension}"
                )
            with self._tokens_lock:
                self._tokens += int(payload.get("inputTextTokenCount", 0))
            return vector
        raise AssertionError("unreachable")  # pragma: no cover

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.concurrency == 1 or len(texts) == 1:
            vectors = [self._invoke(text) for text in texts]
        else:
            with ThreadPoolExecutor(
                max_workers=min(self.concurrency, len(texts)), thread_name_prefix="bedrock-embed"
            ) as pool:
                vectors = list(pool.map(self._invoke, texts))  # map keeps the input order
        return np.vstack(vectors).astype(np.float32)

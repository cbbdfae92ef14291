"""Contract tests of the Bedrock embedder: Bedrock cannot run here, so botocore's Stubber checks
each `invoke_model` request against the documented Titan Text Embeddings v2 shapes and answers
with documented responses and errors (ThrottlingException included)."""

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from lorechat_pipeline.core.backends.retry import Backoff
from lorechat_pipeline.core.bedrock_embedding import (
    TITAN_V2,
    BedrockEmbedder,
    EmbeddingFailed,
    bedrock_model_id,
    is_bedrock_model_id,
    parse_bedrock_model_id,
)
from lorechat_pipeline.core.manifest import IndexManifest, ManifestMismatch
from tests.backends.conftest import SleepRecorder


def titan_response(vector: list[float], tokens: int = 5) -> dict[str, Any]:
    body = json.dumps({"embedding": vector, "inputTextTokenCount": tokens}).encode()
    return {"body": StreamingBody(io.BytesIO(body), len(body)), "contentType": "application/json"}


def titan_request(text: str, dimension: int = 256, normalize: bool = True) -> dict[str, Any]:
    body = {"inputText": text, "dimensions": dimension, "normalize": normalize}
    return {
        "modelId": TITAN_V2,
        "body": json.dumps(body),
        "contentType": "application/json",
        "accept": "application/json",
    }


@pytest.fixture
def runtime() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def fast(attempts: int, sleeps: SleepRecorder) -> Backoff:
    return Backoff(attempts=attempts, base_seconds=0.01, cap_seconds=0.05, sleep=sleeps)


def test_titan_v2_request_and_response(runtime: tuple[Any, Stubber]) -> None:
    client, stubber = runtime
    first, second = [0.6] + [0.0] * 254 + [0.8], [0.0] * 255 + [1.0]
    stubber.add_response("invoke_model", titan_response(first, 3), titan_request("alpha"))
    stubber.add_response("invoke_model", titan_response(second, 4), titan_request("beta"))
    embedder = BedrockEmbedder(client, dimension=256, concurrency=1)
    vectors = embedder.embed_documents(["alpha", "beta"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, 256)
    assert np.allclose(vectors[0], first)
    assert np.allclose(vectors[1], second)
    assert embedder.input_tokens == 7
    assert embedder.embed_documents([]).shape == (0, 256)


def test_throttling_is_retried_with_backoff(
    runtime: tuple[Any, Stubber], sleeps: SleepRecorder
) -> None:
    client, stubber = runtime
    for code, status in (("ThrottlingException", 429), ("ServiceUnavailableException", 503)):
        stubber.add_client_error(
            "invoke_model",
            service_error_code=code,
            service_message="Too many requests, please wait before trying again.",
            http_status_code=status,
            expected_params=titan_request("tea", normalize=False),
        )
    stubber.add_response(
        "invoke_model", titan_response([0.5] * 256), titan_request("tea", normalize=False)
    )
    embedder = BedrockEmbedder(
        client, dimension=256, normalize=False, concurrency=1, backoff=fast(4, sleeps)
    )
    assert np.allclose(embedder.embed_query("tea"), 0.5)
    assert len(sleeps.sleeps) == 2
    assert 0 <= sleeps.sleeps[0] <= 0.01
    assert 0 <= sleeps.sleeps[1] <= 0.02


def test_throttling_gives_up_after_bounded_attempts(
    runtime: tuple[Any, Stubber], sleeps: SleepRecorder
) -> None:
    client, stubber = runtime
    for _ in range(3):
        stubber.add_client_error(
            "invoke_model", service_error_code="ThrottlingException", http_status_code=429
        )
    embedder = BedrockEmbedder(client, dimension=256, concurrency=1, backoff=fast(3, sleeps))
    with pytest.raises(EmbeddingFailed, match="ThrottlingException after 3 attempts; giving up"):
        embedder.embed_query("tea")
    assert len(sleeps.sleeps) == 2


def test_other_errors_are_not_retried(runtime: tuple[Any, Stubber], sleeps: SleepRecorder) -> None:
    client, stubber = runtime
    stubber.add_client_error(
        "invoke_model",
        service_error_code="ValidationException",
        service_message="Malformed input request",
        http_status_code=400,
    )
    embedder = BedrockEmbedder(client, dimension=256, concurrency=1, backoff=fast(5, sleeps))
    with pytest.raises(EmbeddingFailed, match="Malformed input request"):
        embedder.embed_query("tea")
    assert sleeps.sleeps == []


class ConcurrentFake:
    """invoke_model with latency, recording how many calls overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.most = 0

    def invoke_model(self, **request: Any) -> dict[str, Any]:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.01)
        text = json.loads(request["body"])["inputText"]
        with self.lock:
            self.in_flight -= 1
        return titan_response([float(len(text))] * 256)


def test_batches_run_on_a_bounded_pool_in_order() -> None:
    fake = ConcurrentFake()
    embedder = BedrockEmbedder(fake, dimension=256, concurrency=3)
    texts = ["x" * n for n in range(1, 25)]
    vectors = embedder.embed_documents(texts)
    assert vectors[:, 0].tolist() == [float(n) for n in range(1, 25)]  # input order kept
    assert 1 < fake.most <= 3


def test_model_id_is_recorded_and_checked_by_the_manifest() -> None:
    assert bedrock_model_id(TITAN_V2, 1024) == "bedrock:amazon.titan-embed-text-v2:0@1024"
    assert parse_bedrock_model_id("bedrock:amazon.titan-embed-text-v2:0@512") == (TITAN_V2, 512)
    assert is_bedrock_model_id("bedrock:x@1")
    assert not is_bedrock_model_id(TITAN_V2)
    with pytest.raises(ValueError, match="@<dimension>"):
        parse_bedrock_model_id("bedrock:amazon.titan-embed-text-v2:0")
    with pytest.raises(ValueError, match="256, 512, 1024"):
        BedrockEmbedder(object(), dimension=384)

    built = BedrockEmbedder(object(), dimension=1024)

    def manifest(embedder: BedrockEmbedder) -> IndexManifest:
        return IndexManifest(
            embedding_model=embedder.model_id,
            embedding_dimension=embedder.dimension,
            metric=embedder.metric,
            normalized=embedder.normalized,
            chunker_version="c1",
            chunker_description="",
        )

    stored = manifest(built)
    assert stored.default_table_name().startswith("chunks_bedrock-amazon-titan-embed-text-v2-0")
    manifest(BedrockEmbedder(object(), dimension=1024)).require_same_embedder(stored, "index")
    with pytest.raises(
        ManifestMismatch, match=re.escape("bedrock:amazon.titan-embed-text-v2:0@1024")
    ):
        manifest(BedrockEmbedder(object(), dimension=512)).require_same_embedder(stored, "index")


def test_create_turns_off_botocore_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    embedder = BedrockEmbedder.for_model_id(
        "bedrock:amazon.titan-embed-text-v2:0@512", region="eu-west-1", concurrency=8
    )
    assert (embedder.model, embedder.dimension, embedder.concurrency) == (TITAN_V2, 512, 8)
    config = embedder.client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert embedder.client.meta.region_name == "eu-west-1"

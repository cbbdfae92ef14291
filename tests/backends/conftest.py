from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lorechat_pipeline.core.backends.retry import Backoff
from lorechat_pipeline.core.backends.upstash_client import UpstashCredentials, UpstashVectorClient
from lorechat_pipeline.core.ids import chunk_id
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.records import index_schema
from tests.backends.upstash_contract_server import RunningServer, upstash_contract_server

TOKEN = "AXsecret-token-4f1c9b"  # what a leak check looks for
DIMENSION = 8


class SleepRecorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def fast_backoff(attempts: int = 5, recorder: SleepRecorder | None = None) -> Backoff:
    return Backoff(
        attempts=attempts, base_seconds=0.001, cap_seconds=0.01, sleep=recorder or (lambda _: None)
    )


def make_manifest(dimension: int = DIMENSION, chunker_version: str = "chunker-1") -> IndexManifest:
    return IndexManifest(
        embedding_model="test/random-unit-vectors",
        embedding_dimension=dimension,
        metric="cosine",
        normalized=True,
        chunker_version=chunker_version,
        chunker_description="test chunker",
    )


def unit_vectors(count: int, dimension: int = DIMENSION, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunk_rows(
    doc_id: str,
    texts: Sequence[str],
    vectors: np.ndarray,
    *,
    shard: str = "shard-000",
    collection: str = "handbook",
    content_fp: str = "fp-1",
    **extra: Any,
) -> list[dict[str, Any]]:
    rows = []
    for ordinal, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        rows.append(
            {
                "chunk_id": chunk_id(doc_id, ordinal, text),
                "document_id": doc_id,
                "document": f"{collection}/{doc_id}.md",
                "collection": collection,
                "shard": shard,
                "source_version": "etag-1",
                "content_hash": "hash-" + doc_id,
                "content_fp": content_fp,
                "content_type": "text/markdown",
                "ordinal": ordinal,
                "text": text,
                "title": f"Title of {doc_id}",
                "page_number": ordinal + 1,
                "section": "Intro" if ordinal == 0 else None,
                "element_types": ["NarrativeText"],
                "user_metadata": None,
                "chunker_version": "chunker-1",
                "embedding_model": "test/random-unit-vectors",
                "vector": np.asarray(vector, dtype=np.float32).tolist(),
            }
            | extra
        )
    return rows


def table(rows: list[dict[str, Any]], dimension: int = DIMENSION) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=index_schema(dimension))


@pytest.fixture
def upstash() -> Iterator[RunningServer]:
    with upstash_contract_server(token=TOKEN, dimension=DIMENSION) as server:
        yield server


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def client(upstash: RunningServer, sleeps: SleepRecorder) -> Iterator[UpstashVectorClient]:
    with UpstashVectorClient(
        UpstashCredentials(upstash.url, TOKEN), backoff=fast_backoff(recorder=sleeps), timeout=5
    ) as client:
        yield client

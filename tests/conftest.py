import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# The suite never reaches a hub: models and the spaCy pipeline come from installed packages.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The real packaged all-MiniLM-L6-v2, loaded once for the whole session."""
    from lorechat_pipeline.core.embedding import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder()
    model.embed_documents(["warm up"])
    return model


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ONNX export per model for the whole session (and its subprocesses), not one per
    pipeline home: every test pipeline embeds with the default onnx encoder."""
    configured = os.environ.get("LORECHAT_ONNX_CACHE_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("onnx-cache")
    os.environ["LORECHAT_ONNX_CACHE_DIR"] = str(folder)
    yield folder
    if configured is None:
        os.environ.pop("LORECHAT_ONNX_CACHE_DIR", None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's real S3 HTTP API on loopback (not an in-process mock)."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_client(moto_endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

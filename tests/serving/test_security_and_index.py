"""Keys, scopes and rate limits; presigned uploads on moto; the index contract (manifest refusal,
alias switch without a restart); binding safety."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorechat_pipeline.core.embedding import SentenceTransformerEmbedder
from serving.settings import (
    ApiKey,
    ServingSettings,
    UnsafeBinding,
    hash_api_key,
    require_safe_binding,
)
from tests.conftest import REPO_ROOT, free_port
from tests.serving.conftest import BuiltIndex, ServerFactory

ADMIN, KITCHEN = "admin-secret-key", "kitchen-only-key"
KEYS = [
    ApiKey(name="admin", sha256=hash_api_key(ADMIN)),
    ApiKey(name="kitchen", sha256=hash_api_key(KITCHEN), collections=["kitchen"]),
]


def test_keys_are_required_and_scope_collections(serve: ServerFactory) -> None:
    server = serve(api_keys=KEYS)
    query = {"query": "how to store things", "k": 10, "mode": "dense"}
    with server.client() as anonymous:
        refused = anonymous.post("/v1/search", json=query)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "API key is required" in refused.json()["error"]["message"]
    with server.client("not-a-key") as stranger:
        assert stranger.post("/v1/search", json=query).status_code == 401
    with server.client(ADMIN) as admin:
        everything = admin.post("/v1/search", json=query).json()["hits"]
        assert len({hit["collection"] for hit in everything}) > 1
    with server.client(KITCHEN) as kitchen:
        scoped = kitchen.post("/v1/search", json=query).json()["hits"]
        assert scoped
        assert {hit["collection"] for hit in scoped} == {"kitchen"}
        other = kitchen.post("/v1/search", json={**query, "collection": "energy"})
        assert other.status_code == 403
        assert "'energy'" in other.json()["error"]["message"]
        assert kitchen.get("/v1/documents/energy/solar.md/chunks").status_code == 404
        # X-API-Key works as well as a bearer token.
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KITCHEN}) as header_key:
        assert header_key.post("/v1/search", json=query).status_code == 200


def test_rate_limit_answers_429_with_retry_after(serve: ServerFactory) -> None:
    limited = [ApiKey(name="tiny", sha256=hash_api_key("tiny-key"), requests_per_minute=3)]
    server = serve(api_keys=limited, rate_limit_per_minute=100)
    with server.client("tiny-key") as client:
        statuses = [
            client.post("/v1/search", json={"query": "tea", "mode": "keyword"}).status_code
            for _ in range(5)
        ]
        assert statuses[:3] == [200, 200, 200]
        assert statuses[3:] == [429, 429]
        refused = client.post("/v1/search", json={"query": "tea", "mode": "keyword"})
        assert int(refused.headers["retry-after"]) >= 1
        assert "rate limit" in refused.json()["error"]["message"]
        assert "lorechat_rate_limited_total 3.0" in client.get("/metrics").text


def test_presigned_upload_lands_in_the_collection_prefix(
    serve: ServerFactory, s3_client: Any, moto_endpoint: str
) -> None:
    s3_client.create_bucket(Bucket="uploads-src")
    server = serve(
        api_keys=KEYS,
        upload_bucket="uploads-src",
        upload_prefix="docs",
        upload_max_bytes=1000,
        s3_endpoint_url=moto_endpoint,
    )
    body = {"filename": "../../etc/Leave policy.md", "content_type": "text/markdown", "size": 40}
    with server.client(KITCHEN) as kitchen:
        granted = kitchen.post("/v1/uploads", json={**body, "collection": "kitchen"})
        assert granted.status_code == 200, granted.text
        form = granted.json()
        assert form["key"] == "docs/kitchen/Leave policy.md"  # path parts dropped
        content = b"# Leave\n\nAsk two weeks ahead, please."
        uploaded = httpx.post(
            form["url"], data=form["fields"], files={"file": ("x.md", content, "text/markdown")}
        )
        assert uploaded.status_code in (200, 204), uploaded.text
        stored = s3_client.get_object(Bucket="uploads-src", Key=form["key"])
        assert stored["Body"].read() == content
        assert stored["ContentType"] == "text/markdown"
        policy = json.loads(__import__("base64").b64decode(form["fields"]["policy"]))
        assert ["content-length-range", 1, 40] in policy["conditions"]

        other = kitchen.post("/v1/uploads", json={**body, "collection": "energy"})
        assert other.status_code == 403
        wrong_type = kitchen.post(
            "/v1/uploads",
            json={**body, "collection": "kitchen", "content_type": "application/x-msdownload"},
        )
        assert wrong_type.status_code == 400
        assert "not accepted" in wrong_type.json()["error"]["message"]
        too_big = kitchen.post("/v1/uploads", json={**body, "collection": "kitchen", "size": 5000})
        assert too_big.status_code == 400
        assert "upload limit" in too_big.json()["error"]["message"]
        bad_collection = kitchen.post("/v1/uploads", json={**body, "collection": "../x"})
        assert bad_collection.status_code == 422


def test_alias_switch_is_served_without_a_restart(
    serve: ServerFactory, built_index: BuiltIndex, tmp_path: Path
) -> None:
    import shutil

    # A private copy of the home: promoting a new version must not disturb the shared index.
    home = tmp_path / "home"
    shutil.copytree(built_index.home, home)
    server = serve(home=home)
    blue = BuiltIndex(home, built_index.source).pipeline()
    green = BuiltIndex(home, built_index.source).pipeline(
        chunk_max_characters=300, chunk_new_after_characters=200, chunk_combine_under_characters=50
    )
    try:
        with server.client() as client:
            before = client.post("/v1/search", json={"query": "tea"}).json()["index_version"]
            assert before == blue.open_index().name
            summary = green.ingest()
            assert summary.promotion is not None
            assert summary.promotion.promoted
            # The previous version answers until the new one's in-memory copy is built.
            deadline = time.monotonic() + 30
            answered_from = []
            while not answered_from or answered_from[-1] == before:
                assert time.monotonic() < deadline, "the promotion was never served"
                found = client.post("/v1/search", json={"query": "tea"})
                assert found.status_code == 200
                answered_from.append(found.json()["index_version"])
            assert set(answered_from) == {before, green.open_index().name}
            assert client.get("/readyz").json()["index_version"] == answered_from[-1]
            assert client.get("/v1/index").json()["resident_rows"] == green.open_index().count()
    finally:
        blue.close()
        green.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_mismatched_embedder_is_refused_at_start(built_index: BuiltIndex, workers: str) -> None:
    env = {
        **os.environ,
        "LORECHAT_WORKERS": workers,  # several: the supervisor stops too, and says so
        "LORECHAT_HOME": str(built_index.home),
        "LORECHAT_EMBEDDING_MAX_TOKENS": "16",  # the same weights, another model: other vectors
        # Bound by the supervisor of several workers first; one worker never gets that far.
        "LORECHAT_SERVE_PORT": str(free_port()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "serving"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "holds vectors of sentence-transformers/all-MiniLM-L6-v2" in result.stderr
    if workers != "1":
        assert "failed to start" in result.stderr
    assert "@max-tokens-16" in result.stderr


def test_serving_does_not_import_the_pipeline_stack() -> None:
    code = (
        "import sys, serving.app, serving.server; "
        "print([m for m in ('dagster', 'unstructured', 'lorechat_pipeline.runner') "
        "if m in sys.modules])"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_no_keys_means_loopback_only(tmp_path: Path) -> None:
    open_settings = ServingSettings(home=tmp_path)
    require_safe_binding(open_settings, "127.0.0.1")
    require_safe_binding(open_settings, "::1")
    with pytest.raises(UnsafeBinding, match="without API keys"):
        require_safe_binding(open_settings, "0.0.0.0")
    keyed = ServingSettings(home=tmp_path, api_keys=KEYS)
    require_safe_binding(keyed, "0.0.0.0")
    from_env = ServingSettings(
        home=tmp_path,
        api_keys=json.dumps([k.model_dump() for k in KEYS]),  # type: ignore[arg-type]
    )
    assert [k.name for k in from_env.all_api_keys()] == ["admin", "kitchen"]


def test_query_vectors_match_ingestion(embedder: Any) -> None:
    fresh = SentenceTransformerEmbedder()
    text = "cosine parity between the serving and ingestion embedders"
    a, b = fresh.embed_query(text), embedder.embed_documents([text])[0]
    assert float(a @ b) >= 0.9999

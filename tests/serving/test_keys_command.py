"""`lorechat keys create`: a new key is shown once, and the entry it prints is what the server
needs to accept that key (and only within its collections)."""

import json
import re

from typer.testing import CliRunner

from lorechat_pipeline.cli import app
from serving.settings import ApiKey
from tests.serving.conftest import ServerFactory


def test_a_created_key_is_accepted_within_its_collections(serve: ServerFactory) -> None:
    result = CliRunner().invoke(
        app, ["keys", "create", "--name", "kitchen-app", "--collection", "kitchen"]
    )
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout.strip().splitlines()[-1])
    (key,) = re.findall(r"lck_[A-Za-z0-9_-]{43}", result.stderr)
    assert key not in result.stdout  # only the digest is meant to be stored
    assert entry["collections"] == ["kitchen"]

    server = serve(api_keys=[ApiKey.model_validate(entry)])
    with server.client(key) as client:
        hits = client.post("/v1/search", json={"query": "green tea", "k": 3}).json()["hits"]
        assert hits
        assert {hit["collection"] for hit in hits} == {"kitchen"}
        refused = client.post("/v1/search", json={"query": "tea", "collection": "energy"})
        assert refused.status_code == 403
    with server.client("lck_" + "x" * 43) as stranger:
        assert stranger.post("/v1/search", json={"query": "tea"}).status_code == 401

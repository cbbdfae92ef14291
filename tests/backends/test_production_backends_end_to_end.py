"""End to end on the production backends, against the contract doubles on loopback: `lorechat
ingest`, `lorechat search`, `lorechat status`, the promote job and the serving app, configured
only by LORECHAT_VECTOR_STORE / LORECHAT_EMBEDDER / UPSTASH_VECTOR_REST_* variables.

One corpus is ingested once into Upstash (the contract server) and, from the same processed
artifacts, into LanceDB; the tests then compare the two, change and delete documents, promote a
new namespace, embed with Bedrock (its contract double), and finally look for the seeded secrets
everywhere a run leaves traces.
"""

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lorechat_pipeline.cli import app as cli_app
from lorechat_pipeline.core.backends.upstash_client import (
    TOKEN_SETTING,
    URL_SETTING,
    UpstashCredentialsError,
    botocore_bodies_unlogged,
)
from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex
from lorechat_pipeline.core.bedrock_embedding import BedrockEmbedder
from lorechat_pipeline.core.ids import document_id
from lorechat_pipeline.core.manifest import ManifestMismatch
from lorechat_pipeline.defs.automation.sensors import promotion_request
from lorechat_pipeline.runner import Pipeline
from lorechat_pipeline.settings import load_settings
from serving.app import create_app
from serving.settings import ServingSettings
from tests.backends.bedrock_contract_server import RunningBedrock, bedrock_contract_server
from tests.backends.upstash_contract_server import RunningServer, upstash_contract_server
from tests.conftest import free_port

# Distinctive values a leak check can look for.
TOKEN = "AXupstash-e2e-token-7d3f0a5c"
AWS_KEY_ID = "AKIAE2ECONTRACTTEST"
AWS_SECRET = "aws-secret-e2e-91c4b7f2d8"
SECRETS = (TOKEN, AWS_SECRET)

DOCUMENTS = {
    "kb/tea.md": "# Tea\n\nGreen tea is best brewed at eighty degrees Celsius for two to three "
    "minutes, never with boiling water.\n",
    "kb/bikes.txt": "Bicycle repair\n\nTo fix a flat tyre, remove the wheel, take out the inner "
    "tube and find the puncture by submerging it in water.\n",
    "energy/solar.md": "# Solar panels\n\nSolar panels convert sunlight into electricity using "
    "photovoltaic cells; clean them twice a year.\n",
}
QUERIES = [
    "how hot should the water be for green tea",
    "repairing a punctured bicycle tube",
    "photovoltaic electricity from sunlight",
    "cleaning schedule",
]
SMALL_CHUNKS = {
    "chunk_max_characters": 120,
    "chunk_new_after_characters": 100,
    "chunk_combine_under_characters": 50,
}


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class World:
    root: Path
    source: Path
    home: Path
    upstash: RunningServer
    bedrock: RunningBedrock
    moto: str
    ingested: dict[str, Any]
    logs: Recorder
    outputs: list[str] = field(default_factory=list)  # every CLI output and error message

    def settings(self, **overrides: Any) -> Any:
        return load_settings(home=self.home, source=str(self.source), parse_workers=1, **overrides)

    def pipeline(self, **overrides: Any) -> Pipeline:
        return Pipeline.from_settings(self.settings(**overrides))

    def cli(self, *args: str, **env: str) -> Any:
        variables = {"LORECHAT_HOME": str(self.home), "LORECHAT_SOURCE": str(self.source)}
        variables |= {"LORECHAT_PARSE_WORKERS": "1", **env}
        result = CliRunner().invoke(cli_app, list(args), env=variables, catch_exceptions=False)
        self.outputs += [result.stdout, result.stderr]
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def write_documents(source: Path, documents: dict[str, str]) -> None:
    for relative, text in documents.items():
        path = source / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, embedder: Any, moto_endpoint: str) -> Any:
    root = tmp_path_factory.mktemp("production-backends")
    source, home = root / "source", root / "home"
    write_documents(source, DOCUMENTS)
    logs = Recorder()
    logs.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    root_logger.addHandler(logs)
    root_logger.setLevel(logging.DEBUG)
    with (
        upstash_contract_server(token=TOKEN, dimension=embedder.dimension) as upstash,
        bedrock_contract_server() as bedrock,
        pytest.MonkeyPatch.context() as env,
    ):
        # What a deployment sets: the backend choice and Upstash's own variables.
        env.setenv("LORECHAT_VECTOR_STORE", "upstash")
        env.setenv(URL_SETTING, upstash.url)
        env.setenv(TOKEN_SETTING, TOKEN)
        env.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        world = World(root, source, home, upstash, bedrock, moto_endpoint, {}, logs)
        world.ingested["upstash"] = world.cli("ingest", "--json")
        # The same corpus on LanceDB, from the same processed artifacts (nothing parsed again).
        world.ingested["lancedb"] = world.cli("ingest", "--json", LORECHAT_VECTOR_STORE="lancedb")
        try:
            yield world
        finally:
            root_logger.removeHandler(logs)
            root_logger.setLevel(previous_level)


@contextlib.contextmanager
def running(settings: ServingSettings, embedder: Any) -> Iterator[httpx.Client]:
    """The app under a real uvicorn server on a loopback port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, embedder=embedder),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the server stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_ingest_search_and_status_honour_the_upstash_settings(world: World) -> None:
    upstash, lance = world.ingested["upstash"], world.ingested["lancedb"]
    assert upstash["documents"]["new"] == 3
    assert lance["documents"] == {
        "new": 0,
        "changed": 0,
        "unchanged": 3,
        "deleted": 0,
        "quarantined": 0,
    }
    assert upstash["chunks"]["written"] == lance["chunks"]["written"] > 0

    status = world.cli("status", "--json")
    assert status["index"]["backend"] == "upstash"
    assert status["index"]["uri"] == world.upstash.url
    namespace = status["index"]["table"]
    assert status["chunks"] == upstash["chunks"]["written"]
    # One namespace for the version, the reserved one for the manifest and alias records.
    assert namespace in world.upstash.state.namespaces
    assert "_lorechat" in world.upstash.state.namespaces
    assert set(world.upstash.state.namespaces[namespace]) == {
        row["chunk_id"]
        for row in world.pipeline().open_current_index().rows(None, ["chunk_id"]).to_pylist()
    }

    for query in QUERIES:
        on_upstash = world.cli("search", query, "-k", "3", "--json")["hits"]
        on_lance = world.cli("search", query, "-k", "3", "--json", LORECHAT_VECTOR_STORE="lancedb")
        assert [h["chunk_id"] for h in on_upstash] == [h["chunk_id"] for h in on_lance["hits"]]
        assert [h["score"] for h in on_upstash] == pytest.approx(
            [h["score"] for h in on_lance["hits"]], abs=1e-4
        )
    top = world.cli("search", QUERIES[0], "-k", "1", "--json")["hits"][0]
    assert top["document"] == "kb/tea.md"


def test_serving_answers_from_upstash_as_from_lancedb(world: World, embedder: Any) -> None:
    common = {"home": world.home, "alias_check_seconds": 0}
    with (
        running(ServingSettings(**common), embedder) as on_upstash,
        running(ServingSettings(**common, vector_store="lancedb"), embedder) as on_lance,
    ):
        info = on_upstash.get("/v1/index").json()
        assert info["uri"] == world.upstash.url
        assert info["chunks"] == on_lance.get("/v1/index").json()["chunks"]
        for query in QUERIES:
            for extra in ({}, {"collection": "kb"}, {"filter": {"page_number": {"gte": 1}}}):
                body = {"query": query, "k": 3, "mode": "dense", **extra}
                got = on_upstash.post("/v1/search", json=body)
                expected = on_lance.post("/v1/search", json=body)
                assert got.status_code == expected.status_code == 200, got.text
                assert [h["chunk_id"] for h in got.json()["hits"]] == [
                    h["chunk_id"] for h in expected.json()["hits"]
                ], (query, extra)
                assert [h["citation"] for h in got.json()["hits"]] == [
                    h["citation"] for h in expected.json()["hits"]
                ]
        # A dense-only Upstash index has no keyword search: a clear 400, not a 500; chat asks
        # for hybrid and is answered from the dense ranking.
        keyword = on_upstash.post("/v1/search", json={"query": "tea", "mode": "keyword"})
        assert keyword.status_code == 400
        assert "hybrid index" in keyword.json()["error"]["message"]
        chat = on_upstash.post(
            "/v1/chat", json={"messages": [{"role": "user", "content": QUERIES[0]}]}
        )
        assert chat.status_code == 200
        assert chat.json()["citations"][0]["citation"]["source"] == "kb/tea.md"
        chunks = on_upstash.get("/v1/documents/kb/tea.md/chunks")
        assert chunks.status_code == 200
        metrics = on_upstash.get("/metrics").text
        assert "lorechat_index_chunks" in metrics
        world.outputs += [metrics, keyword.text, json.dumps(info)]


def test_serving_refuses_an_index_of_another_embedder(world: World) -> None:
    """Configured for Bedrock, the app embeds queries with Bedrock (its contract double), sees
    that the index was built by the local model, and refuses to start."""
    settings = ServingSettings(
        home=world.home,
        embedder="bedrock",
        bedrock_endpoint_url=world.bedrock.url,
        bedrock_embedding_dimension=256,
    )
    before = len(world.bedrock.state.requests)
    with pytest.raises(ManifestMismatch) as refused, TestClient(create_app(settings)):
        pass
    message = str(refused.value)
    assert "bedrock:amazon.titan-embed-text-v2:0@256" in message
    assert "all-MiniLM-L6-v2" in message
    world.outputs.append(message)
    warm_up = world.bedrock.state.requests[before]
    assert warm_up["model_id"] == "amazon.titan-embed-text-v2:0"
    assert json.loads(warm_up["body"]) == {
        "inputText": "warm up",
        "dimensions": 256,
        "normalize": True,
    }


def test_changes_deletions_and_namespace_promotion_on_upstash(world: World) -> None:
    state = world.upstash.state
    blue = world.pipeline()
    blue_namespace = blue.open_current_index().name
    tea, bikes = document_id("kb/tea.md"), document_id("kb/bikes.txt")
    before = len(state.requests)
    old_chunks = {
        vector_id
        for vector_id in state.namespaces[blue_namespace]
        if vector_id.startswith((f"{tea}#", f"{bikes}#"))
    }

    (world.source / "kb/tea.md").write_text(
        "# Tea\n\nOolong tea is steeped at ninety degrees, several short infusions.\n"
    )
    (world.source / "kb/bikes.txt").unlink()
    summary = world.cli("ingest", "--json")
    assert summary["documents"]["changed"] == 1
    assert summary["documents"]["deleted"] == 1
    # The stale chunks went by id, the changed document's only after its new chunks came in:
    # it was never absent.
    writes = [
        (path.split("/")[1], body)
        for _, path, body in state.requests[before:]
        if path in (f"/upsert/{blue_namespace}", f"/delete/{blue_namespace}")
    ]
    tea_upserted_at = next(
        number
        for number, (operation, body) in enumerate(writes)
        if operation == "upsert" and any(v["id"].startswith(f"{tea}#") for v in body)
    )
    deleted_at = {
        vector_id: number
        for number, (operation, body) in enumerate(writes)
        if operation == "delete"
        for vector_id in body["ids"]
    }
    assert set(deleted_at) == old_chunks  # every tea chunk's text changed
    assert all(deleted_at[i] > tea_upserted_at for i in old_chunks if i.startswith(f"{tea}#"))
    records = state.namespaces[blue_namespace]
    assert not [vector_id for vector_id in records if vector_id.startswith(f"{bikes}#")]
    tea_texts = [r.data for vector_id, r in records.items() if vector_id.startswith(f"{tea}#")]
    assert tea_texts
    assert all("Oolong" in (text or "") for text in tea_texts)

    # The run's metadata reports what Upstash could not hold (nothing, here).
    instance = blue.instance()
    event = instance.get_latest_materialization_event(dg.AssetKey("vector_index"))
    assert event is not None
    assert event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    assert metadata["chunks_quarantined"].value == 0
    assert metadata["index_table"].value == blue_namespace

    # A new chunker builds a new namespace; the sensor asks for a promotion, and the real
    # promote job switches the alias to it.
    green = world.pipeline(**SMALL_CHUNKS, promotion_max_quality_drop=1.0)
    green.ingest(promote=False)
    green_namespace = green.open_index().name
    assert green_namespace != blue_namespace
    assert blue.open_current_index().name == blue_namespace  # still reading blue
    request = promotion_request(
        green.resource("processed_store"),
        green.resource("ingestion_config"),
        green.resource("embedder"),
        green.resource("vector_store"),
    )
    assert isinstance(request, dg.RunRequest)
    assert request.run_key is not None
    assert request.run_key.startswith(f"promote:{green_namespace}:")
    promotion = green.promote_if_needed()
    assert promotion is not None
    assert promotion.promoted, promotion.refused
    alias = green.vector_store.aliases().read()
    assert alias is not None
    assert alias.table == green_namespace
    assert [v.table for v in alias.retired] == [blue_namespace]
    assert {blue_namespace, green_namespace} <= set(green.vector_store.versions())
    assert {blue_namespace, green_namespace} <= set(state.namespaces)
    current = blue.open_current_index()  # same embedder: searches now read green
    assert isinstance(current, UpstashVectorIndex)
    assert current.name == green_namespace
    assert current.count() == sum(1 for _ in state.namespaces[green_namespace])
    for pipeline in (blue, green):
        pipeline.close()


def test_bedrock_embeddings_through_the_resource_and_the_cli(world: World) -> None:
    """LORECHAT_EMBEDDER=bedrock: the embedding step calls Bedrock (its contract double) through
    the resource, retries a throttle, and the manifest records the Bedrock model; `lorechat
    search` then embeds queries with Bedrock too."""
    bedrock_env = {
        "LORECHAT_EMBEDDER": "bedrock",
        "LORECHAT_VECTOR_STORE": "lancedb",
        "LORECHAT_INDEX_URI": str(world.root / "bedrock-index"),
        "LORECHAT_BEDROCK_ENDPOINT_URL": world.bedrock.url,
        "LORECHAT_BEDROCK_EMBEDDING_DIMENSION": "256",
        "LORECHAT_BEDROCK_EMBEDDING_CONCURRENCY": "2",
    }
    before = len(world.bedrock.state.requests)
    world.bedrock.state.throttle_next(2)
    summary = world.cli("ingest", "--json", **bedrock_env)
    assert summary["chunks"]["written"] > 0
    calls = world.bedrock.state.requests[before:]
    assert len(calls) == summary["chunks"]["written"] + 2  # every chunk, and the 2 retries
    for call in calls:
        assert call["content_type"] == call["accept"] == "application/json"
        assert set(json.loads(call["body"])) == {"inputText", "dimensions", "normalize"}
    status = world.cli("status", "--json", **bedrock_env)
    manifest = status["index"]["manifest"]
    assert manifest["embedding_model"] == "bedrock:amazon.titan-embed-text-v2:0@256"
    assert manifest["embedding_dimension"] == 256
    hits = world.cli("search", "green tea", "-k", "1", "--json", **bedrock_env)["hits"]
    assert hits[0]["document"] == "kb/tea.md"

    # The resource rebuilds the embedder an index names, whichever embedder is configured.
    local = world.pipeline(vector_store="lancedb", bedrock_endpoint_url=world.bedrock.url)
    bedrock_index = world.pipeline(
        embedder="bedrock",
        vector_store="lancedb",
        index_uri=str(world.root / "bedrock-index"),
        bedrock_endpoint_url=world.bedrock.url,
        bedrock_embedding_dimension=256,
    )
    rebuilt = local.resource("embedder").embedder_for(bedrock_index.open_current_index().manifest)
    assert isinstance(rebuilt, BedrockEmbedder)
    assert rebuilt.model_id == "bedrock:amazon.titan-embed-text-v2:0@256"
    assert rebuilt.embed_query("tea").shape == (256,)
    for pipeline in (local, bedrock_index):
        pipeline.close()


def test_upstash_credentials_from_secrets_manager(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=world.moto,
        region_name="us-east-1",
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
    )
    with botocore_bodies_unlogged():  # what an operator stores is not under test
        secrets.create_secret(
            Name="lorechat/upstash-e2e",
            SecretString=json.dumps({URL_SETTING: world.upstash.url, TOKEN_SETTING: TOKEN}),
        )
    monkeypatch.delenv(URL_SETTING)
    monkeypatch.delenv(TOKEN_SETTING)
    from_secret = {
        "LORECHAT_UPSTASH_SECRET_ID": "lorechat/upstash-e2e",
        "LORECHAT_SECRETS_ENDPOINT_URL": world.moto,
    }
    status = world.cli("status", "--json", **from_secret)
    assert status["index"]["uri"] == world.upstash.url
    assert status["chunks"] > 0
    # The serving container resolves the same secret.
    settings = ServingSettings(
        home=world.home,
        upstash_secret_id="lorechat/upstash-e2e",
        secrets_endpoint_url=world.moto,
        query_encoder="torch",
    )
    with running(settings, None) as client:
        assert client.get("/readyz").json()["status"] == "ready"

    # Missing or wrong credentials fail naming the setting, never echoing a value.
    missing = world.pipeline()
    with pytest.raises(UpstashCredentialsError) as unset:
        missing.vector_store.versions()
    assert "UPSTASH_VECTOR_REST_URL" in str(unset.value)
    assert "LORECHAT_UPSTASH_SECRET_ID" in str(unset.value)
    wrong = world.pipeline(upstash_secret_id="lorechat/absent", secrets_endpoint_url=world.moto)
    with pytest.raises(UpstashCredentialsError) as absent:
        wrong.vector_store.versions()
    assert "LORECHAT_UPSTASH_SECRET_ID" in str(absent.value)
    monkeypatch.setenv(URL_SETTING, world.upstash.url)
    monkeypatch.setenv(TOKEN_SETTING, TOKEN + "-wrong")
    rejected = world.pipeline()
    with pytest.raises(UpstashCredentialsError) as refused:
        rejected.vector_store.versions()
    assert "UPSTASH_VECTOR_REST_TOKEN" in str(refused.value)
    world.outputs += [str(unset.value), str(absent.value), str(refused.value)]
    assert TOKEN not in str(refused.value)
    for pipeline in (missing, wrong, rejected):
        pipeline.close()


def test_no_secret_in_logs_event_logs_metadata_or_errors(world: World) -> None:
    """Runs (ingests, promotion), CLI outputs, error messages and /metrics above all saw the
    token and the AWS secret key; none of them holds either."""
    instance = world.pipeline().instance()
    runs = instance.get_runs()
    assert len(runs) >= 5
    for run in runs:
        texts = [json.dumps(run.run_config, default=str), json.dumps(run.tags)]
        texts += [dg.serialize_value(record) for record in instance.all_logs(run.run_id)]
        for text in texts:
            for secret in SECRETS:
                assert secret not in text, f"a secret in run {run.run_id}'s event log"
    materialization = instance.get_latest_materialization_event(dg.AssetKey("vector_index"))
    assert materialization is not None
    for secret in SECRETS:
        leaked = [line[:300] for line in world.logs.lines if secret in line]
        assert not leaked, leaked[:3]
        assert all(secret not in text for text in world.outputs)
    # Whatever the runs wrote under LORECHAT_HOME (the instance's SQLite, compute logs, ...).
    for path in world.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, path
    assert world.logs.lines  # the recorder did see the runs' logging

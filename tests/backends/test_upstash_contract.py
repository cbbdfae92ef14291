"""Contract tests of the Upstash Vector REST client against a loopback double of the service:
the wire format of each call, retries on 429/5xx/transport errors (bounded, with Retry-After),
credentials from the environment and from Secrets Manager (moto's server), and no token leaks."""

import json
import logging
import random
from typing import Any

import pytest

from lorechat_pipeline.core.backends.retry import Backoff, parse_retry_after
from lorechat_pipeline.core.backends.upstash_client import (
    SECRET_ID_SETTING,
    TOKEN_SETTING,
    URL_SETTING,
    UpstashCredentials,
    UpstashCredentialsError,
    UpstashRequestError,
    UpstashUnavailable,
    UpstashVectorClient,
)
from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex
from tests.backends.conftest import (
    DIMENSION,
    TOKEN,
    SleepRecorder,
    chunk_rows,
    fast_backoff,
    make_manifest,
    table,
    unit_vectors,
)
from tests.backends.upstash_contract_server import RunningServer
from tests.conftest import free_port


def vector(seed: int) -> list[float]:
    return [float(x) for x in unit_vectors(1, seed=seed)[0]]


def test_each_call_speaks_the_documented_wire_format(
    upstash: RunningServer, client: UpstashVectorClient
) -> None:
    client.upsert(
        "ns-a",
        [
            {"id": "doc1#0", "vector": vector(1), "metadata": {"shard": "s1"}, "data": "one"},
            {"id": "doc1#1", "vector": vector(2), "metadata": {"shard": "s2"}, "data": "two"},
            {"id": "doc2#0", "vector": vector(3), "metadata": {"shard": "s1"}, "data": "three"},
        ],
    )
    hits = client.query(
        "ns-a", {"vector": vector(1), "topK": 2, "includeMetadata": True, "filter": "shard = 's1'"}
    )
    assert [hit["id"] for hit in hits] == ["doc1#0", "doc2#0"]
    assert hits[0]["score"] == pytest.approx(1.0)  # Upstash's (1 + cos) / 2
    assert client.fetch("ns-a", ["doc1#1", "nope"], include_data=True)[1] is None
    cursor, page = client.range("ns-a", limit=1, prefix="doc1#")
    assert (cursor, [v["id"] for v in page]) == ("1", ["doc1#0"])
    assert [v["id"] for v in client.scan("ns-a", prefix="doc1#", page_size=1)] == [
        "doc1#0",
        "doc1#1",
    ]
    assert client.delete("ns-a", prefix="doc1#") == 2
    assert client.delete("ns-a", filter="shard = 's1'") == 1
    assert client.info()["namespaces"]["ns-a"] == {"vectorCount": 0, "pendingVectorCount": 0}
    assert "ns-a" in client.list_namespaces()
    assert client.delete_namespace("ns-a") is True
    assert client.delete_namespace("ns-a") is False  # already gone: fine

    calls = [(method, path) for method, path, _ in upstash.state.requests]
    assert calls == [
        ("POST", "/upsert/ns-a"),
        ("POST", "/query/ns-a"),
        ("POST", "/fetch/ns-a"),
        ("POST", "/range/ns-a"),
        ("POST", "/range/ns-a"),
        ("POST", "/range/ns-a"),
        ("POST", "/delete/ns-a"),
        ("POST", "/delete/ns-a"),
        ("GET", "/info"),
        ("GET", "/list-namespaces"),
        ("DELETE", "/delete-namespace/ns-a"),
        ("DELETE", "/delete-namespace/ns-a"),
    ]
    bodies = [body for _, _, body in upstash.state.requests]
    assert set(bodies[0][0]) == {"id", "vector", "metadata", "data"}
    assert bodies[3] == {
        "cursor": "0",
        "limit": 1,
        "prefix": "doc1#",
        "includeMetadata": True,
        "includeData": False,
        "includeVectors": False,
    }
    assert bodies[6] == {"prefix": "doc1#"}
    assert bodies[7] == {"filter": "shard = 's1'"}


def test_the_official_client_agrees_with_the_contract_server(upstash: RunningServer) -> None:
    """The double's answers parse with Upstash's own client (upstash-vector), so the shapes the
    contract tests rely on are the service's, not ones made up to suit our client."""
    from upstash_vector import Index, Vector

    index = Index(url=upstash.url, token=TOKEN, retries=0, allow_telemetry=False)
    index.upsert(
        [
            Vector(id="a#0", vector=vector(1), metadata={"n": 1, "tag": "x"}, data="alpha"),
            Vector(id="a#1", vector=vector(2), metadata={"n": 5, "tag": "y"}, data="beta"),
            Vector(id="b#0", vector=vector(3), metadata={"n": 9, "tag": "x"}, data="gamma"),
        ],
        namespace="ns",
    )
    hits = index.query(
        vector=vector(1), top_k=3, include_metadata=True, filter="n >= 5", namespace="ns"
    )
    assert {hit.id for hit in hits} == {"a#1", "b#0"}
    assert hits[0].score >= hits[1].score
    page = index.range(cursor="", limit=10, prefix="a#", include_data=True, namespace="ns")
    assert [v.id for v in page.vectors] == ["a#0", "a#1"]
    assert page.next_cursor == ""
    assert page.vectors[0].data == "alpha"
    fetched = index.fetch(["b#0"], include_metadata=True, namespace="ns")[0]
    assert fetched is not None
    assert fetched.metadata == {"n": 9, "tag": "x"}
    info = index.info()
    assert info.dimension == DIMENSION
    assert info.namespaces["ns"].vector_count == 3
    assert index.delete(prefix="a#", namespace="ns").deleted == 2
    assert "ns" in index.list_namespaces()
    index.delete_namespace("ns")
    assert "ns" not in index.list_namespaces()


def test_429_and_5xx_are_retried_with_jitter_and_retry_after(
    upstash: RunningServer, client: UpstashVectorClient, sleeps: SleepRecorder
) -> None:
    upstash.state.fail_next(2, status=503)
    upstash.state.fail_next(1, status=429, retry_after="0.25")
    upstash.state.fail_next(1, status=500)
    assert client.info()["dimension"] == DIMENSION
    assert len(upstash.state.requests) == 5
    assert len(sleeps.sleeps) == 4
    assert sleeps.sleeps[2] == 0.25  # the server's Retry-After, honoured
    for retry in (0, 1, 3):  # full jitter: uniform in [0, min(cap, base * 2^retry)]
        assert 0.0 <= sleeps.sleeps[retry] <= min(0.01, 0.001 * 2**retry)


def test_retries_are_bounded_and_give_up_clearly(
    upstash: RunningServer, sleeps: SleepRecorder
) -> None:
    upstash.state.fail_next(10, status=429)
    with (
        UpstashVectorClient(
            UpstashCredentials(upstash.url, TOKEN), backoff=fast_backoff(3, sleeps)
        ) as client,
        pytest.raises(UpstashUnavailable, match=r"POST /upsert/ns failed 3 times.*429"),
    ):
        client.upsert("ns", [{"id": "x", "vector": vector(1)}])
    assert len(upstash.state.requests) == 3
    assert len(sleeps.sleeps) == 2
    assert upstash.state.namespaces.get("ns") is None


def test_transport_errors_are_retried(sleeps: SleepRecorder) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with (
        UpstashVectorClient(
            UpstashCredentials(closed, TOKEN), backoff=fast_backoff(3, sleeps), timeout=2
        ) as client,
        pytest.raises(UpstashUnavailable, match=f"ConnectError.*is {URL_SETTING} right"),
    ):
        client.info()
    assert len(sleeps.sleeps) == 2


def test_client_errors_are_not_retried(upstash: RunningServer, client: UpstashVectorClient) -> None:
    with pytest.raises(UpstashRequestError, match="Invalid vector dimension: 3") as raised:
        client.upsert("ns", [{"id": "x", "vector": [1.0, 0.0, 0.0]}])
    assert raised.value.status == 400
    assert len(upstash.state.requests) == 1


def test_backoff_policy() -> None:
    backoff = Backoff(attempts=5, base_seconds=1.0, cap_seconds=5.0, rng=random.Random(7))
    for retry in range(8):
        assert 0.0 <= backoff.delay(retry) <= min(5.0, 2.0**retry)
    assert backoff.delay(0, retry_after=120.0) == 60.0  # a huge hint is bounded
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None
    with pytest.raises(ValueError, match="at least 1"):
        Backoff(attempts=0)


def test_missing_credentials_name_the_settings() -> None:
    with pytest.raises(UpstashCredentialsError) as raised:
        UpstashCredentials.from_env({})
    message = str(raised.value)
    assert URL_SETTING in message
    assert TOKEN_SETTING in message
    assert SECRET_ID_SETTING in message
    with pytest.raises(UpstashCredentialsError, match=f"^{TOKEN_SETTING} is not set"):
        UpstashCredentials.resolve(env={URL_SETTING: "https://x.upstash.io"})
    found = UpstashCredentials.resolve(
        env={URL_SETTING: "https://x.upstash.io/", TOKEN_SETTING: "t"}
    )
    assert found == UpstashCredentials("https://x.upstash.io", "t")
    with pytest.raises(UpstashCredentialsError, match=f"{URL_SETTING} from .* is not a URL") as bad:
        UpstashCredentials.resolve(env={URL_SETTING: TOKEN, TOKEN_SETTING: "t"})
    assert TOKEN not in str(bad.value)


def test_rejected_credentials_name_the_setting(upstash: RunningServer) -> None:
    with (
        UpstashVectorClient(
            UpstashCredentials(upstash.url, "wrong-token"), backoff=fast_backoff()
        ) as client,
        pytest.raises(UpstashCredentialsError, match=f"rejected the credentials.*{TOKEN_SETTING}"),
    ):
        client.info()
    assert len(upstash.state.requests) == 1  # a wrong token is not retried


def _secrets_client(moto_endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "secretsmanager",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_credentials_from_secrets_manager(moto_endpoint: str, upstash: RunningServer) -> None:
    secrets = _secrets_client(moto_endpoint)
    secrets.create_secret(
        Name="lorechat/upstash",
        SecretString=json.dumps({URL_SETTING: upstash.url, TOKEN_SETTING: TOKEN}),
    )
    # Named by LORECHAT_UPSTASH_SECRET_ID, resolved at run time; env vars are not needed.
    credentials = UpstashCredentials.resolve(
        env={SECRET_ID_SETTING: "lorechat/upstash"}, secrets_client=secrets
    )
    assert credentials == UpstashCredentials(upstash.url, TOKEN)
    with UpstashVectorClient(credentials, backoff=fast_backoff()) as client:
        assert client.info()["dimension"] == DIMENSION

    with pytest.raises(UpstashCredentialsError, match="ResourceNotFoundException") as raised:
        UpstashCredentials.from_secrets_manager("lorechat/absent", client=secrets)
    assert "lorechat/absent" in str(raised.value)
    assert SECRET_ID_SETTING in str(raised.value)

    secrets.create_secret(Name="lorechat/plain", SecretString=TOKEN)
    with pytest.raises(UpstashCredentialsError, match="must be a JSON object") as raised:
        UpstashCredentials.from_secrets_manager("lorechat/plain", client=secrets)
    assert TOKEN not in str(raised.value)
    secrets.create_secret(Name="lorechat/half", SecretString=json.dumps({URL_SETTING: "u"}))
    with pytest.raises(UpstashCredentialsError, match=f"{TOKEN_SETTING} is not set in the Secrets"):
        UpstashCredentials.from_secrets_manager("lorechat/half", client=secrets)


def test_the_token_never_appears_in_logs_errors_or_repr(
    upstash: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    credentials = UpstashCredentials(upstash.url, TOKEN)
    seen: list[str] = [repr(credentials), str(credentials)]
    upstash.state.fail_next(2, status=503)
    with UpstashVectorClient(credentials, backoff=fast_backoff()) as client:
        seen.append(repr(client))
        index = UpstashVectorIndex.open_or_create(client, make_manifest())
        index.replace_documents(table(chunk_rows("doc", ["x"], unit_vectors(1))), ["doc"])
        seen.append(repr(index))
        with pytest.raises(UpstashRequestError) as bad_request:
            client.upsert("ns", [{"id": "x", "vector": [1.0]}])
        seen.append(str(bad_request.value))
        upstash.state.fail_next(10, status=503)
        with pytest.raises(UpstashUnavailable) as unavailable:
            client.info()
        seen.append(str(unavailable.value))
    with (
        UpstashVectorClient(
            UpstashCredentials(upstash.url, "wrong-" + TOKEN), backoff=fast_backoff()
        ) as wrong,
        pytest.raises(UpstashCredentialsError) as rejected,
    ):
        wrong.info()
    seen.append(str(rejected.value))
    assert any("retry" in record.message for record in caplog.records)  # logs were written
    assert caplog.text
    assert TOKEN not in caplog.text
    for text in seen:
        assert TOKEN not in text

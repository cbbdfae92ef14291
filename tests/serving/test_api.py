"""The API through a real uvicorn server: search modes, filters, chat, inspection, errors."""

import json
from typing import Any

import pytest

from tests.serving.conftest import BuiltIndex, ServerFactory


def search(client: Any, **body: Any) -> Any:
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_health_readiness_and_index_info(serve: ServerFactory) -> None:
    with serve().client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        info = client.get("/v1/index").json()
        assert info["manifest"]["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert info["documents"] == 4
        assert info["chunks"] >= 4
        assert info["index_version"] == ready.json()["index_version"]
        assert client.get("/openapi.json").json()["paths"]["/v1/search"]
        assert "lorechat_http_requests" in client.get("/metrics").text


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_each_mode_finds_the_right_document_with_a_citation(
    serve: ServerFactory, mode: str
) -> None:
    with serve().client() as client:
        result = search(client, query="brewing green tea temperature", k=3, mode=mode)
        assert result["mode"] == mode
        top = result["hits"][0]
        assert top["citation"]["source"] == "kitchen/tea.html"
        assert top["collection"] == "kitchen"
        assert "eighty degrees" in top["text"] or "Green tea" in top["text"]
        assert top["citation"]["version"]


def test_hybrid_fuses_keyword_only_matches(serve: ServerFactory) -> None:
    with serve().client() as client:
        # "inverter" appears verbatim only in the solar page.
        hybrid = search(client, query="inverter warning lights", k=2, mode="hybrid")
        assert hybrid["hits"][0]["citation"]["source"] == "energy/solar.md"
        assert hybrid["hits"][0]["metadata"] == {"team": "facilities"}


def test_filters_equality_in_and_ranges(serve: ServerFactory) -> None:
    with serve().client() as client:
        only_energy = search(
            client, query="tea", k=5, mode="dense", filter={"collection": "energy"}
        )
        assert {h["collection"] for h in only_energy["hits"]} == {"energy"}
        either = search(
            client,
            query="maintenance",
            k=10,
            mode="dense",
            filter={"collection": {"in": ["energy", "kitchen"]}},
        )
        assert {h["collection"] for h in either["hits"]} <= {"energy", "kitchen"}
        pages = search(
            client,
            query="boiler",
            k=10,
            mode="dense",
            filter={"document": "manuals/boiler.pdf", "page_number": {"gte": 2, "lte": 3}},
        )
        assert pages["hits"]
        assert {h["citation"]["page"] for h in pages["hits"]} <= {2, 3}
        scoped = search(client, query="tea", k=5, mode="keyword", collection="kitchen")
        assert {h["collection"] for h in scoped["hits"]} == {"kitchen"}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"query": "x", "filter": {"password": "x"}}, 400, "cannot filter on 'password'"),
        ({"query": "x", "filter": {"page_number": "two"}}, 400, "takes integers"),
        ({"query": "x", "filter": {"collection": {"like": "%"}}}, 400, "unknown operator"),
        ({"query": "x", "filter": {"collection": {"in": []}}}, 400, "non-empty list"),
        ({"query": "x' OR 1=1 --", "filter": {"collection": "a' OR '1'='1"}}, 200, ""),
        ({"query": "x" * 5000}, 400, "limit is 2000"),
        ({"query": "   "}, 400, "blank"),
        ({"query": "x", "k": 5000}, 400, "the limit is 50"),
        ({"query": "x", "k": 0}, 422, "k"),
        ({"query": "x", "mode": "psychic"}, 422, "mode"),
        ({"query": "x", "unexpected": 1}, 422, "unexpected"),
        ({}, 422, "query"),
    ],
)
def test_bad_search_requests_get_a_4xx_with_a_message(
    serve: ServerFactory, body: dict[str, Any], status: int, fragment: str
) -> None:
    with serve().client() as client:
        response = client.post("/v1/search", json=body)
        assert response.status_code == status, response.text
        if status != 200:
            error = response.json()["error"]
            assert fragment in error["message"]
            assert error["request_id"] == response.headers["x-request-id"]
        else:
            # The server's own time, for clients to tell it from the network's.
            spent = response.headers["server-timing"]
            assert spent.startswith("app;dur=")
            assert 0 < float(spent.removeprefix("app;dur=")) < 60_000
            assert response.json()["hits"] == []  # the literal matched nothing; no injection


def test_malformed_and_oversized_bodies(serve: ServerFactory) -> None:
    with serve(max_request_bytes=2048).client() as client:
        broken = client.post(
            "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422
        assert "JSON" in broken.json()["error"]["message"]
        huge = client.post("/v1/search", json={"query": "x" * 4000})
        assert huge.status_code == 413
        assert "over 2048 bytes" in huge.json()["error"]["message"]
        missing = client.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"]
        wrong_method = client.get("/v1/search")
        assert wrong_method.status_code == 405


def test_document_chunks_in_order(serve: ServerFactory) -> None:
    with serve().client() as client:
        chunks = client.get("/v1/documents/manuals/boiler.pdf/chunks")
        assert chunks.status_code == 200
        body = chunks.json()
        pages = [c["citation"]["page"] for c in body["chunks"]]
        assert pages == sorted(pages)
        assert body["document"] == "manuals/boiler.pdf"
        absent = client.get("/v1/documents/nope.md/chunks")
        assert absent.status_code == 404
        assert "nope.md" in absent.json()["error"]["message"]


def test_chat_extractive_answer_with_citations(serve: ServerFactory) -> None:
    with serve().client() as client:
        response = client.post(
            "/v1/chat",
            json={"messages": [{"role": "user", "content": "How do I fix a flat tyre?"}], "k": 3},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["kind"] == "extractive"
        assert body["model"] is None
        assert body["citations"][0]["citation"]["source"] == "bikes.txt"
        assert "[1]" in body["answer"]
        assert "inner tube" in body["answer"]


def test_chat_streams_server_sent_events(serve: ServerFactory) -> None:
    with serve().client() as client:
        with client.stream(
            "POST",
            "/v1/chat",
            json={"messages": [{"role": "user", "content": "green tea storage"}], "stream": True},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = []
            for block in response.read().decode().split("\n\n"):
                if block.strip():
                    name = block.split("\n")[0].removeprefix("event: ")
                    data = json.loads(block.split("\n")[1].removeprefix("data: "))
                    events.append((name, data))
        names = [name for name, _ in events]
        assert names[0] == "citations"
        assert names[-1] == "done"
        assert "token" in names
        assert events[0][1]["citations"][0]["citation"]["source"] == "kitchen/tea.html"
        assert events[-1][1]["kind"] == "extractive"
        text = "".join(data["text"] for name, data in events if name == "token")
        assert "airtight" in text or "eighty" in text


def test_chat_needs_a_user_message(serve: ServerFactory) -> None:
    with serve().client() as client:
        response = client.post(
            "/v1/chat", json={"messages": [{"role": "assistant", "content": "hello"}]}
        )
        assert response.status_code == 400
        assert "user message" in response.json()["error"]["message"]


def test_built_index_is_the_pipelines(built_index: BuiltIndex) -> None:
    pipeline = built_index.pipeline()
    try:
        assert pipeline.open_current_index().count() >= 4
    finally:
        pipeline.close()

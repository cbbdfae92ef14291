"""Contract test of the Bedrock generator: Bedrock cannot run here, so a loopback double speaks
its documented wire format — the Converse JSON API and, for streaming, the
`application/vnd.amazon.eventstream` binary framing — and the real boto3 client parses it."""

import binascii
import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

import pytest

from serving.settings import GeneratorKind
from tests.conftest import free_port
from tests.serving.conftest import ServerFactory

MODEL = "amazon.nova-micro-v1:0"
PIECES = ["Store tea ", "in an airtight ", "container [1]."]


def event_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One event-stream message: prelude, headers, payload, each part CRC32-checked."""
    headers = b""
    for name, value in (
        (":event-type", event_type),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ):
        encoded = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(encoded))
        headers += encoded
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


class FakeBedrock(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = unquote(self.path)  # the model id is URL-encoded in the path (":" → %3A)
        FakeBedrock.requests.append(
            {"path": path, "body": body, "auth": self.headers.get("Authorization", "")}
        )
        if path == f"/model/{MODEL}/converse":
            payload = {
                "output": {
                    "message": {"role": "assistant", "content": [{"text": "".join(PIECES)}]}
                },
                "stopReason": "end_turn",
                "usage": {"inputTokens": 10, "outputTokens": 8, "totalTokens": 18},
                "metrics": {"latencyMs": 5},
            }
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if path == f"/model/{MODEL}/converse-stream":
            frames = [event_message("messageStart", {"role": "assistant"})]
            frames += [
                event_message("contentBlockDelta", {"delta": {"text": p}, "contentBlockIndex": 0})
                for p in PIECES
            ]
            frames.append(event_message("messageStop", {"stopReason": "end_turn"}))
            data = b"".join(frames)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        error = json.dumps({"message": "Model not found"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "ResourceNotFoundException")
        self.send_header("Content-Length", str(len(error)))
        self.end_headers()
        self.wfile.write(error)


@pytest.fixture
def fake_bedrock() -> Iterator[str]:
    FakeBedrock.requests.clear()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeBedrock)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_bedrock_converse_contract(
    serve: ServerFactory, fake_bedrock: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = serve(
        generator=GeneratorKind.BEDROCK, bedrock_endpoint_url=fake_bedrock, bedrock_model_id=MODEL
    )
    question = {"messages": [{"role": "user", "content": "How should I store green tea?"}]}
    with server.client() as client:
        response = client.post("/v1/chat", json=question)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["kind"] == "generated"
        assert answer["model"] == MODEL
        assert answer["answer"] == "".join(PIECES)
        sent = FakeBedrock.requests[-1]
        assert sent["auth"].startswith("AWS4-HMAC-SHA256")  # signed like any Bedrock call
        assert sent["body"]["messages"] == [
            {"role": "user", "content": [{"text": "How should I store green tea?"}]}
        ]
        system = sent["body"]["system"][0]["text"]
        assert "[1] (kitchen/tea.html)" in system  # the retrieved passages, numbered
        assert sent["body"]["inferenceConfig"]["maxTokens"] == 512

        with client.stream("POST", "/v1/chat", json={**question, "stream": True}) as response:
            text = response.read().decode()
        tokens = [
            json.loads(block.split("\ndata: ")[1])["text"]
            for block in text.split("\n\n")
            if block.startswith("event: token")
        ]
        assert tokens == PIECES
        assert FakeBedrock.requests[-1]["path"].endswith("/converse-stream")


def test_bedrock_errors_become_502(
    serve: ServerFactory, fake_bedrock: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = serve(
        generator=GeneratorKind.BEDROCK,
        bedrock_endpoint_url=fake_bedrock,
        bedrock_model_id="no.such-model",
    )
    with server.client() as client:
        response = client.post("/v1/chat", json={"messages": [{"role": "user", "content": "tea?"}]})
        assert response.status_code == 502
        assert "Model not found" in response.json()["error"]["message"]

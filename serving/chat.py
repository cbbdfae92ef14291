"""Grounded answers: retrieved passages go to a generator with instructions to cite them.

Generators: any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp's server) and Amazon
Bedrock's Converse API. With none configured the answer is extractive — the best passages with
their citations, labelled as such — never a made-up model.
"""

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import httpx

from serving.models import ChatMessage, SearchHit

SYSTEM_PROMPT = (
    "You answer questions about a document collection using only the numbered sources below. "
    "Cite the sources you use as [1], [2], ... right after the sentence they support. If the "
    "sources do not contain the answer, say that you do not know. Be concise."
)
EXTRACTIVE_PASSAGES = 3


class GeneratorNotReady(RuntimeError):
    """The generator was not reached or is not ready: the request may be sent again."""


class GenerationFailed(RuntimeError):
    pass


class GenerationInterrupted(GenerationFailed):
    """The generator went away mid-answer (a restart): the answer so far is incomplete."""


def sources_block(hits: Sequence[SearchHit]) -> str:
    lines = []
    for number, hit in enumerate(hits, start=1):
        where = hit.citation.source + (f", page {hit.citation.page}" if hit.citation.page else "")
        lines.append(f"[{number}] ({where})\n{hit.text}")
    return "\n\n".join(lines)


def grounded_messages(
    messages: Sequence[ChatMessage], hits: Sequence[SearchHit]
) -> list[dict[str, str]]:
    system = SYSTEM_PROMPT + "\n\nSources:\n\n" + (sources_block(hits) or "(none found)")
    history = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
    return [{"role": "system", "content": system}, *history]


class Generator(ABC):
    kind: Literal["generated", "extractive"] = "generated"
    model: str | None = None

    @abstractmethod
    def stream(self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]) -> Iterator[str]:
        """The answer, piece by piece."""

    def complete(self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]) -> str:
        return "".join(self.stream(messages, hits))

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class ExtractiveGenerator(Generator):
    kind: Literal["generated", "extractive"] = "extractive"

    def stream(self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]) -> Iterator[str]:
        if not hits:
            yield "No passage in the index matches the question."
            return
        yield "Most relevant passages (no generator is configured, so this is extractive):\n\n"
        for number, hit in enumerate(hits[:EXTRACTIVE_PASSAGES], start=1):
            separator = "\n\n" if number > 1 else ""
            yield f"{separator}[{number}] {hit.text.strip()}"


class RetryWindow:
    """Pauses between asks (0.25 s, doubling to 2 s) for `seconds` counted from the first
    failure: an answer may have been generating for a while before it was cut off."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline: float | None = None
        self.pause = 0.25

    def wait(self) -> bool:
        """Sleep before asking again; False when the window is spent (give up)."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.seconds
        if now + self.pause > self.deadline:
            return False
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 2.0)
        return True


class OpenAICompatibleGenerator(Generator):
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        max_tokens: int,
        timeout: float,
        retry_seconds: float = 0.0,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.retry_seconds = retry_seconds
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def _payload(
        self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit], stream: bool
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": grounded_messages(messages, hits),
            "max_tokens": self.max_tokens,
            "temperature": 0.2,
            "stream": stream,
        }

    def stream(self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]) -> Iterator[str]:
        """The answer's pieces as the generator streams them. A generator that refuses the
        connection or says it is unavailable (restarting, loading its model) is asked again
        for up to `retry_seconds`: nothing reached it, so asking again is safe."""
        window = RetryWindow(self.retry_seconds)
        while True:
            try:
                yield from self._stream_once(messages, hits)
                return
            except GeneratorNotReady as error:
                if not window.wait():
                    raise GenerationFailed(str(error)) from error

    def complete(self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]) -> str:
        """The whole answer. Nothing of it has reached the caller yet, so an answer cut off by
        the generator going away is asked for again from the start, within `retry_seconds`."""
        window = RetryWindow(self.retry_seconds)
        while True:
            try:
                return "".join(self.stream(messages, hits))
            except GenerationInterrupted:
                if not window.wait():
                    raise

    def _stream_once(
        self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]
    ) -> Iterator[str]:
        try:
            with self.client.stream(
                "POST", "/chat/completions", json=self._payload(messages, hits, True)
            ) as response:
                if response.status_code == 503:
                    raise GeneratorNotReady("generator unavailable (503)")
                if response.status_code >= 400:
                    response.read()
                    raise GenerationFailed(
                        f"generator answered {response.status_code}: {response.text[:300]}"
                    )
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    choices = json.loads(data).get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        yield piece
        except httpx.ConnectError as error:
            raise GeneratorNotReady(f"generator unreachable: {error}") from error
        except (httpx.RemoteProtocolError, httpx.ReadError) as error:
            raise GenerationInterrupted(f"generator went away mid-answer: {error}") from error
        except httpx.HTTPError as error:
            raise GenerationFailed(f"generator unreachable: {error}") from error

    def close(self) -> None:
        self.client.close()


class BedrockGenerator(Generator):
    def __init__(self, model_id: str, client: Any, max_tokens: int) -> None:
        self.model = model_id
        self.client = client
        self.max_tokens = max_tokens

    def _request(
        self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]
    ) -> dict[str, Any]:
        grounded = grounded_messages(messages, hits)
        return {
            "modelId": self.model,
            "system": [{"text": grounded[0]["content"]}],
            "messages": [
                {"role": m["role"], "content": [{"text": m["content"]}]} for m in grounded[1:]
            ],
            "inferenceConfig": {"maxTokens": self.max_tokens, "temperature": 0.2},
        }

    def complete(self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]) -> str:
        try:
            response = self.client.converse(**self._request(messages, hits))
        except Exception as error:  # botocore's errors carry the service's message
            raise GenerationFailed(f"Bedrock: {error}") from error
        blocks = response.get("output", {}).get("message", {}).get("content", [])
        return "".join(block.get("text", "") for block in blocks)

    def stream(self, messages: Sequence[ChatMessage], hits: Sequence[SearchHit]) -> Iterator[str]:
        try:
            response = self.client.converse_stream(**self._request(messages, hits))
            for event in response["stream"]:
                text = event.get("contentBlockDelta", {}).get("delta", {}).get("text")
                if text:
                    yield text
        except Exception as error:  # botocore's errors carry the service's message
            raise GenerationFailed(f"Bedrock: {error}") from error

"""A loopback double of Amazon Bedrock Runtime's InvokeModel for Titan Text Embeddings v2, for
contract tests (Bedrock cannot run here).

It implements the documented wire format (rest-json): `POST /model/{modelId}/invoke` with a SigV4
`Authorization` header, the request body `{"inputText", "dimensions", "normalize"}` and the
answer `{"embedding": [...], "inputTextTokenCount": n}`; errors carry their type in the
`x-amzn-ErrorType` header and a `{"message": ...}` body (ThrottlingException is a 429,
ValidationException a 400). The real boto3 client talks to it, so the embedder is tested through
botocore's own serialisation and error parsing.

Embeddings are deterministic hashed bags of words (normalised when asked), so texts sharing words
are near each other and searches have meaningful answers.
"""

import hashlib
import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import numpy as np

TITAN_V2_DIMENSIONS = (256, 512, 1024)
WORD = re.compile(r"\w+")
# A SigV4 signature for the `bedrock` signing name (whichever credentials boto3's chain found).
SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=[^/\s]+/\d{8}/[\w-]+/bedrock/aws4_request, ")


def bag_of_words(text: str, dimension: int, normalize: bool = True) -> list[float]:
    vector = np.zeros(dimension, dtype=np.float64)
    for word in WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "big") % dimension] += 1.0
        vector[int.from_bytes(digest[4:], "big") % dimension] += 0.5
    if not vector.any():
        vector[0] = 1.0
    if normalize:
        vector /= np.linalg.norm(vector)
    return [float(x) for x in vector]


@dataclass
class BedrockContractState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: deque[tuple[int, str]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def throttle_next(self, count: int) -> None:
        with self.lock:
            self.failures.extend([(429, "ThrottlingException")] * count)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any], error_type: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "contract-test")
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = re.fullmatch(r"/model/([^/]+)/invoke", self.path)
        if match is None:
            self._send(404, {"message": f"Unknown operation {self.path}"}, "UnknownOperation")
            return
        model_id = unquote(match.group(1))
        authorization = self.headers.get("Authorization", "")
        with state.lock:
            state.requests.append(
                {
                    "model_id": model_id,
                    "content_type": self.headers.get("Content-Type"),
                    "accept": self.headers.get("Accept"),
                    "body": raw.decode(errors="replace"),
                }
            )
            failure = state.failures.popleft() if state.failures else None
        if not SIGV4.match(authorization):
            self._send(403, {"message": "The security token is invalid."}, "AccessDeniedException")
            return
        if failure is not None:
            self._send(failure[0], {"message": "Too many requests, please wait."}, failure[1])
            return
        try:
            body = json.loads(raw)
            text, dimension = body["inputText"], int(body.get("dimensions", 1024))
            normalize = bool(body.get("normalize", True))
            if not isinstance(text, str) or not text or dimension not in TITAN_V2_DIMENSIONS:
                raise ValueError
            if "titan-embed-text-v2" not in model_id:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self._send(400, {"message": "Malformed input request"}, "ValidationException")
            return
        tokens = len(WORD.findall(text))
        self._send(
            200,
            {
                "embedding": bag_of_words(text, dimension, normalize),
                "inputTextTokenCount": tokens,
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: BedrockContractState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@dataclass
class RunningBedrock:
    url: str
    state: BedrockContractState


@contextmanager
def bedrock_contract_server() -> Iterator[RunningBedrock]:
    state = BedrockContractState()
    server = _Server(state)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="bedrock-contract", daemon=True
    )
    thread.start()
    try:
        yield RunningBedrock(f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()

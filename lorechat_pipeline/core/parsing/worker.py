"""Parse in worker processes, so a hung or crashing parser costs one document, not the run.

Workers are started with "spawn" (the parent may have torch and its thread pools loaded, which
must never be forked), warm up once (imports and the spaCy model) and are reused. Each has its own
pipe; the parent waits on all pipes and process sentinels at once, so it can kill the one worker
whose document overran its deadline and start a fresh one while the others carry on.
"""

import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import time
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from lorechat_pipeline.core.parsing.errors import DocumentRejected
from lorechat_pipeline.core.parsing.limits import ParseLimits
from lorechat_pipeline.core.parsing.partition import (
    MAX_DOCUMENT_BYTES,
    ChunkingOptions,
    ParsedChunk,
)
from lorechat_pipeline.core.parsing.worker_process import ParseFunction, worker_main
from lorechat_pipeline.core.turns import Turns

logger = logging.getLogger(__name__)

Outcome = list[ParsedChunk] | DocumentRejected

STARTUP_TIMEOUT_SECONDS = 180.0
STOP_GRACE_SECONDS = 2.0
# Address space per worker (RLIMIT_AS): a warm worker maps ~700 MB, the rest is for one document.
DEFAULT_MEMORY_LIMIT_MB = 2048


class ParserPool:
    """Runs `parse_and_chunk` in `workers` reusable processes. Not thread-safe: one caller at
    a time, which callers in several threads arrange through `turns`.

    `parse_function` replaces `parse_and_chunk` (a picklable module-level callable or a
    "module:function" path); it exists so tests can make a worker hang or crash. `limits` are
    the per-document limits `parse_and_chunk` enforces; `memory_limit_mb=None` means no limit.
    """

    def __init__(
        self,
        options: ChunkingOptions,
        *,
        workers: int = 1,
        timeout_seconds: float = 120.0,
        memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
        limits: ParseLimits | None = None,
        parse_function: ParseFunction | str | None = None,
    ):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.options = options
        self.workers = workers
        self.timeout_seconds = timeout_seconds
        self.memory_limit_mb = memory_limit_mb
        self.limits = limits or ParseLimits()
        self._parse_function = parse_function
        self._context = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = []
        self._job_ids = itertools.count()
        self.restarts = 0  # workers replaced after a timeout or a crash
        # For callers that share the pool between threads: whose turn it is to call `map`.
        self.turns = Turns()

    def __enter__(self) -> "ParserPool":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers (they warm up in the background); `map` does this when needed."""
        while len(self._pool) < self.workers:
            self._pool.append(self._spawn())

    def close(self) -> None:
        pool, self._pool = self._pool, []
        for worker in pool:
            worker.stop()
        for worker in pool:
            worker.join_or_kill(STOP_GRACE_SECONDS)

    def parse(self, data: bytes, filename: str) -> list[ParsedChunk]:
        """Chunks of one document; raises DocumentRejected."""
        for _, outcome in self.map([("document", data, filename)]):
            if isinstance(outcome, DocumentRejected):
                raise outcome
            return outcome
        raise AssertionError("map yields one outcome per job")

    def map(self, jobs: Iterable[tuple[str, bytes, str]]) -> Iterator[tuple[str, Outcome]]:
        """(key, chunks or rejection) for each (key, data, filename), in completion order.

        `jobs` is read lazily, one job per idle worker, so only `workers` documents are held at
        once however long the stream is.
        """
        self.start()
        pending = iter(jobs)
        exhausted = False
        try:
            while True:
                for worker in self._pool:
                    if exhausted or not worker.idle:
                        continue
                    job = next(pending, None)
                    if job is None:
                        exhausted = True
                        break
                    key, data, filename = job
                    if len(data) > MAX_DOCUMENT_BYTES:
                        yield key, DocumentRejected("too_large", f"{len(data)} bytes")
                        continue
                    if not worker.send(next(self._job_ids), key, data, filename):
                        yield from self._handle_exit(worker)
                if exhausted and not any(worker.job for worker in self._pool):
                    return
                yield from self._collect()
        finally:
            # Abandoned part-way: documents still being parsed die with their workers, and a
            # worker retiring after a MemoryError is replaced now (`parse` stops at its reply;
            # a pool of retiring workers would otherwise never be idle again).
            for worker in list(self._pool):
                if worker.job or worker.retiring:
                    self._replace(worker)

    # --- the event loop --------------------------------------------------------------------------

    def _collect(self) -> Iterator[tuple[str, Outcome]]:
        """Wait for the next reply, exit or deadline and handle everything that is due."""
        deadlines = [worker.deadline for worker in self._pool if worker.job or not worker.ready]
        if not deadlines:
            return
        timeout = max(0.0, min(deadlines) - time.monotonic())
        handles: list[Any] = [worker.conn for worker in self._pool]
        handles += [worker.process.sentinel for worker in self._pool]
        signalled = set(wait(handles, timeout))
        for worker in list(self._pool):
            if worker.conn in signalled or worker.process.sentinel in signalled:
                yield from self._drain(worker)
            if worker.retiring:
                self._replace(worker)
            elif not worker.process.is_alive():
                yield from self._handle_exit(worker)
        now = time.monotonic()
        for worker in list(self._pool):
            if worker.job and now >= worker.deadline:
                job = worker.job
                logger.warning("parsing %s timed out; restarting its worker", job.filename)
                self._replace(worker)
                detail = (
                    f"parsing took longer than {self.timeout_seconds:g}s; the worker was killed"
                )
                yield job.key, DocumentRejected("timeout", detail)
            elif not worker.ready and now >= worker.deadline:
                self.close()
                raise RuntimeError(f"a parser worker did not start in {STARTUP_TIMEOUT_SECONDS:g}s")

    def _drain(self, worker: "_Worker") -> Iterator[tuple[str, Outcome]]:
        while True:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                return  # it died; _handle_exit reports it
            kind = message[0]
            if kind == "ready":
                worker.ready = True
            elif kind == "failed":
                self.close()
                raise RuntimeError(f"a parser worker failed to start or to parse:\n{message[1]}")
            elif worker.job and message[1] == worker.job.id:
                key = worker.job.key
                worker.job = None
                if kind == "chunks":
                    yield key, message[2]
                else:
                    rejected = DocumentRejected(*message[2])
                    # A worker that ran out of memory exits after replying: give it no more work.
                    worker.retiring = rejected.reason == "memory_exceeded"
                    yield key, rejected

    def _handle_exit(self, worker: "_Worker") -> Iterator[tuple[str, Outcome]]:
        worker.process.join(STOP_GRACE_SECONDS)  # a broken pipe can come just before the exit
        exitcode = worker.process.exitcode
        if not worker.ready:
            self.close()
            raise RuntimeError(f"a parser worker died while starting (exit code {exitcode})")
        job = worker.job
        self._replace(worker)
        if job:
            logger.warning("the parser worker died on %s (exit code %s)", job.filename, exitcode)
            yield job.key, _death_rejection(exitcode)

    def _replace(self, worker: "_Worker") -> None:
        worker.kill()
        self._pool[self._pool.index(worker)] = self._spawn()
        self.restarts += 1

    def _spawn(self) -> "_Worker":
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main,
            args=(
                child_conn,
                self.options,
                self._parse_function,
                self.memory_limit_mb,
                self.limits,
            ),
            name="lorechat-parser",
            daemon=True,  # never outlive the pipeline
        )
        with _main_module_hidden():
            process.start()
        child_conn.close()
        return _Worker(process, parent_conn, self.timeout_seconds)


@dataclass
class _Job:
    id: int
    key: str
    filename: str


class _Worker:
    def __init__(self, process: BaseProcess, conn: Connection, timeout_seconds: float):
        self.process = process
        self.conn = conn
        self.timeout_seconds = timeout_seconds
        self.ready = False
        self.retiring = False
        self.job: _Job | None = None
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS

    @property
    def idle(self) -> bool:
        return self.ready and not self.retiring and self.job is None

    def send(self, job_id: int, key: str, data: bytes, filename: str) -> bool:
        self.job = _Job(job_id, key, filename)
        try:
            self.conn.send((job_id, data, filename))
        except (OSError, ValueError):
            return False  # it died while idle
        # The clock starts once the worker has the bytes: big documents take a while to send.
        self.deadline = time.monotonic() + self.timeout_seconds
        return True

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)

    def join_or_kill(self, grace_seconds: float) -> None:
        self.process.join(grace_seconds)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            # The whole group: a parser may be waiting on a child process (pandoc) that would
            # otherwise run on as an orphan.
            if self.process.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
            self.process.kill()
        self.process.join()
        self.conn.close()
        self.process.close()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a worker without the parent's `__main__`: "spawn" runs the main script's imports
    again in the child, and under `lorechat` or `dagster` that is dagster and torch, ~1.4 GB of
    address space before the first document, which RLIMIT_AS counts (and which the worker never
    uses: it needs worker_main's module, and its arguments are importable by name)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _death_rejection(exitcode: int | None) -> DocumentRejected:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if -exitcode == signal.SIGKILL:
            # Nobody here sent it: the kernel's out-of-memory killer.
            return DocumentRejected("memory_exceeded", f"the parser worker was killed ({name})")
        return DocumentRejected("parser_crashed", f"the parser worker died of {name}")
    return DocumentRejected("parser_crashed", f"the parser worker exited with code {exitcode}")

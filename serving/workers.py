"""Several server processes on one port (LORECHAT_WORKERS), and what they share.

One process runs its Python on one core at a time (the GIL), and a search's Python (HTTP, the
endpoint, the keyword ranking, scoring the probed lists) is about half of its CPU: on two
cores, two processes answer more searches than one. uvicorn's supervisor binds the port, starts
the workers and restarts one that dies. Each worker opens the index, loads its own query
encoder and builds its own copy of the served version; what must hold across them lives in a
folder the supervisor makes: the rate-limit buckets (a caller's limit is the same however its
connections are spread) and the metrics (a scrape of any worker reports them all).
"""

import contextlib
import fcntl
import hashlib
import mmap
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lorechat_pipeline.core.host import usable_cores
from serving.auth import RateLimited, RateLimiter, spend
from serving.query_encoder import EncoderActivity

MAX_WORKERS = 64
RATE_LIMITS_FILE = "rate-limits"
ENCODER_ACTIVITY_FILE = "encoder-activity"
METRICS_FOLDER = "metrics"
# Read by ServingSettings.worker_state_dir in each worker.
WORKER_STATE_VARIABLE = "LORECHAT_WORKER_STATE_DIR"
# Read by prometheus_client when a worker imports it: its values then go to files there.
PROMETHEUS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_worker_state() -> Iterator[Path]:
    """A fresh folder for the workers' shared state, announced in this process's environment
    (workers started inside the block inherit it), and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="lorechat-workers-"))
    previous = {name: os.environ.get(name) for name in (WORKER_STATE_VARIABLE, PROMETHEUS_VARIABLE)}
    try:
        SharedRateLimiter.create(folder / RATE_LIMITS_FILE)
        SharedEncoderActivity.create(folder / ENCODER_ACTIVITY_FILE)
        (folder / METRICS_FOLDER).mkdir()
        os.environ[WORKER_STATE_VARIABLE] = str(folder)
        os.environ[PROMETHEUS_VARIABLE] = str(folder / METRICS_FOLDER)
        yield folder
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def cores_per_worker(workers: int) -> int:
    """The cores one worker sizes its query encoding by: the workers share the machine's."""
    return max(1, usable_cores() // workers)


class MappedTable:
    """A table of fixed records in a file every worker maps, read and written under a lock
    that holds across processes (the file's) and across this process's threads (a flock is the
    open file's, which the threads share)."""

    def __init__(self, path: Path, record: np.dtype) -> None:
        self._file = path.open("r+b")
        mapping = mmap.mmap(self._file.fileno(), 0)  # lives as long as a view of it does
        self.records: np.ndarray | None = np.frombuffer(mapping, dtype=record)
        self._lock = threading.Lock()

    @staticmethod
    def create(path: Path, record: np.dtype, slots: int) -> None:
        path.write_bytes(bytes(slots * record.itemsize))

    @contextlib.contextmanager
    def locked(self) -> Iterator[np.ndarray]:
        assert self.records is not None, "closed"
        with self._lock:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                yield self.records
            finally:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        # The mapping is unmapped once the last view of it goes (a traceback may hold one).
        self.records = None
        self._file.close()


# A record per caller: a 63-bit digest of its name, its tokens and when they were counted.
_BUCKET = np.dtype([("caller", "<u8"), ("tokens", "<f8"), ("updated", "<f8")])
SHARED_SLOTS = 4096
# A caller's record is in one of the SLOT_WINDOW slots after the one its digest names.
SLOT_WINDOW = 16
# A bucket untouched this long has refilled whatever its capacity: forgetting it loses nothing.
FULL_AFTER_SECONDS = 60.0


class SharedRateLimiter(RateLimiter):
    """The token buckets of every worker process, in one table they all map.

    Connections are spread over the processes, so a limit kept per process would let a caller
    through once per process. CLOCK_MONOTONIC, which time.monotonic reads, is one clock for
    every process on the host. A caller's record is looked for in a small window of slots; a
    new caller takes a free slot there, or one idle for a minute (a full bucket, nothing lost),
    or at worst the stalest.
    """

    def __init__(self, per_minute: int, path: Path) -> None:
        super().__init__(per_minute)
        self._table = MappedTable(path, _BUCKET)

    @staticmethod
    def create(path: Path, slots: int = SHARED_SLOTS) -> None:
        MappedTable.create(path, _BUCKET, slots)

    def take(self, caller: str, per_minute: int | None = None) -> None:
        capacity = float(per_minute or self.per_minute)
        digest = hashlib.blake2b(caller.encode(), digest_size=8).digest()
        fingerprint = (int.from_bytes(digest, "little") >> 1) or 1  # 0 marks a free slot
        with self._table.locked() as buckets:
            slots = len(buckets)
            window = (fingerprint % slots + np.arange(SLOT_WINDOW)) % slots
            now = time.monotonic()
            bucket = buckets[_slot(buckets[window], window, fingerprint, now)]
            if bucket["caller"] != fingerprint:
                bucket["caller"], bucket["tokens"], bucket["updated"] = fingerprint, capacity, now
            tokens, retry_after = spend(
                float(bucket["tokens"]), float(bucket["updated"]), capacity, now
            )
            bucket["tokens"], bucket["updated"] = tokens, now
        if retry_after:
            raise RateLimited(retry_after)

    def close(self) -> None:
        self._table.close()


def _slot(seen: np.ndarray, window: np.ndarray, fingerprint: int, now: float) -> int:
    """The caller's slot in `window` (whose records are `seen`), else the one it may take."""
    mine = np.flatnonzero(seen["caller"] == fingerprint)
    if len(mine):
        return int(window[mine[0]])
    free = (seen["caller"] == 0) | (now - seen["updated"] >= FULL_AFTER_SECONDS)
    reusable = np.flatnonzero(free)
    if len(reusable):
        return int(window[reusable[0]])
    return int(window[np.argmin(seen["updated"])])


_ACTIVITY_RECORD = np.dtype([("pid", "<i8"), ("running", "<i8")])


class SharedEncoderActivity(EncoderActivity):
    """The encoder runs going on in every worker process: a query that comes alone may take
    every core only when no worker is encoding (two such queries in two workers would put
    two sessions over every core on the same cores).

    Each worker counts its runs in a slot of its own, claimed at start: a free one or one of
    a process that is gone (a worker that died while encoding does not count forever).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._table = MappedTable(path, _ACTIVITY_RECORD)
        with self._table.locked() as workers:
            self._slot = _claim(workers)

    @staticmethod
    def create(path: Path) -> None:
        MappedTable.create(path, _ACTIVITY_RECORD, MAX_WORKERS)

    def begin(self) -> int:
        with self._table.locked() as workers:
            running = int(workers["running"].sum())
            workers["running"][self._slot] += 1
            return running

    def end(self) -> None:
        with self._table.locked() as workers:
            workers["running"][self._slot] -= 1

    def close(self) -> None:
        with self._table.locked() as workers:
            workers[self._slot] = (0, 0)
        self._table.close()


def _claim(workers: np.ndarray) -> int:
    for slot, pid in enumerate(workers["pid"].tolist()):
        if pid == 0 or not _alive(pid):
            workers[slot] = (os.getpid(), 0)
            return slot
    raise RuntimeError(f"more than {MAX_WORKERS} worker processes")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True

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
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lorechat_pipeline.core.host import usable_cores
from serving.auth import SharedRateLimiter
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
        self._file = path.open("r+b")
        self._mapping = mmap.mmap(self._file.fileno(), 0)
        table = np.frombuffer(self._mapping, dtype=_ACTIVITY_RECORD)
        self._pids, self._running_by_slot = table["pid"], table["running"]
        with self._locked():
            self._slot = self._claim()

    @staticmethod
    def create(path: Path) -> None:
        path.write_bytes(bytes(MAX_WORKERS * _ACTIVITY_RECORD.itemsize))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:  # the file lock is the process's: its threads take this one too
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def _claim(self) -> int:
        for slot, pid in enumerate(self._pids.tolist()):
            if pid == 0 or not _alive(pid):
                self._pids[slot], self._running_by_slot[slot] = os.getpid(), 0
                return slot
        raise RuntimeError(f"more than {MAX_WORKERS} worker processes")

    def begin(self) -> int:
        with self._locked():
            running = int(self._running_by_slot.sum())
            self._running_by_slot[self._slot] += 1
            return running

    def end(self) -> None:
        with self._locked():
            self._running_by_slot[self._slot] -= 1

    def close(self) -> None:
        with self._locked():
            self._pids[self._slot], self._running_by_slot[self._slot] = 0, 0
        del self._pids, self._running_by_slot  # views of the mapping, released first
        self._mapping.close()
        self._file.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True

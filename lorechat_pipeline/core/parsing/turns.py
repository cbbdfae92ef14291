"""Whose turn it is to use a parser pool, when a run's chunk step and a background parse-ahead
share it in one process.

The chunk step (foreground) always goes first: a parse-ahead (background) only starts while no
one else uses the pool, and steps aside between documents as soon as a foreground caller waits,
so the foreground waits at most for the documents already in the workers.
"""

import contextlib
import threading
from collections.abc import Iterator


class PoolTurns:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._foreground_waiting = 0

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        with self._changed:
            self._foreground_waiting += 1
            try:
                self._changed.wait_for(lambda: not self._busy)
            finally:
                self._foreground_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def background(self, stop: threading.Event | None = None) -> Iterator[bool]:
        """Yields True once the pool is this caller's, False if `stop` was set first."""
        with self._changed:
            while self._busy or self._foreground_waiting:
                if stop is not None and stop.is_set():
                    acquired = False
                    break
                # Woken by every release; the timeout only bounds how late `stop` is noticed.
                self._changed.wait(timeout=0.2)
            else:
                self._busy = acquired = True
        if not acquired:
            yield False
            return
        try:
            yield True
        finally:
            self._release()

    def should_step_aside(self) -> bool:
        """For a background holder: a foreground caller is waiting for the pool."""
        return self._foreground_waiting > 0

    def _release(self) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()

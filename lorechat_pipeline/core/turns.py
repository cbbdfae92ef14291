"""Whose turn it is to use something a run's steps and work done ahead of a run share in one
process: the parser pool (a chunk step and a parse-ahead), the CPU's encoder (an embedding step
and an embed-ahead).

The step (foreground) always goes first: work ahead (background) only starts while no one else
holds the turn, and steps aside between units of work as soon as a foreground caller waits, so
the foreground waits at most for the unit already under way.
"""

import collections
import contextlib
import threading
from collections.abc import Iterator


class Turns:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._foreground_waiting = 0
        self._asked: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def foreground(self, work: str | None = None) -> Iterator[None]:
        """The turn, as soon as the holder lets go; `work` names what it is for (a shard), so
        that work ahead on the same thing can tell it came too late (see `background`)."""
        with self._changed:
            self._foreground_waiting += 1
            if work is not None:
                self._asked[work] += 1
                self._changed.notify_all()
            try:
                self._changed.wait_for(lambda: not self._busy)
            finally:
                self._foreground_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def asked(self, work: str) -> int:
        """How many foreground callers have asked for the turn for `work` so far."""
        with self._changed:
            return self._asked[work]

    @contextlib.contextmanager
    def background(
        self, stop: threading.Event | None = None, *, ahead_of: tuple[str, int] | None = None
    ) -> Iterator[bool]:
        """Yields True once the turn is this caller's, False if `stop` was set first. With
        `ahead_of=(work, asked)`, also False once more than `asked` foreground callers have asked
        for `work`: the work this caller meant to do ahead of them is theirs now, and waiting for
        them to finish it would hold this caller up for nothing."""
        with self._changed:
            while True:
                if (stop is not None and stop.is_set()) or (
                    ahead_of is not None and self._asked[ahead_of[0]] > ahead_of[1]
                ):
                    acquired = False
                    break
                if not self._busy and not self._foreground_waiting:
                    self._busy = acquired = True
                    break
                # Woken by every release; the timeout only bounds how late `stop` is noticed.
                self._changed.wait(timeout=0.2)
        if not acquired:
            yield False
            return
        try:
            yield True
        finally:
            self._release()

    def should_step_aside(self) -> bool:
        """For a background holder: a foreground caller is waiting for the turn."""
        return self._foreground_waiting > 0

    def _release(self) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()

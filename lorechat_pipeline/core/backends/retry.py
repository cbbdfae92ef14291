"""Bounded exponential backoff with full jitter, shared by the hosted backends.

Full jitter (a uniform draw between zero and the exponential cap) spreads the retries of many
concurrent workers instead of letting them hammer a throttled service in lockstep.
"""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    attempts: int = 6  # calls in all, the first included
    base_seconds: float = 0.5
    cap_seconds: float = 20.0
    # A server's Retry-After is honoured up to this bound (a minute-long hint must not stall a run).
    max_retry_after_seconds: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Backoff.attempts counts every call and must be at least 1")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_seconds)
        ceiling = min(self.cap_seconds, self.base_seconds * (2**retry))
        return self.rng.uniform(0.0, ceiling)

    def wait(self, retry: int, retry_after: float | None = None) -> float:
        seconds = self.delay(retry, retry_after)
        self.sleep(seconds)
        return seconds


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())

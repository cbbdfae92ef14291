"""API keys (kept as SHA-256 digests, compared in constant time), per-key rate limits and
admission control."""

import asyncio
import contextlib
import hmac
import math
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from serving.settings import ApiKey, hash_api_key

OPEN_ACCESS = ApiKey(name="anonymous", sha256="0" * 64, collections=["*"])


class Unauthorized(Exception):
    pass


class Forbidden(Exception):
    pass


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class Overloaded(Exception):
    """Every search slot is busy and none freed within the queue wait: come back shortly."""

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__(f"the server is at capacity; retry after {max(1, round(retry_after))} s")
        self.retry_after = retry_after


class Admission:
    """At most `slots` searches at once; a search waits up to `queue_seconds` for a slot.

    Under a burst beyond what the cores can answer, a queue grows and every caller's latency
    with it. Turning the excess away at once (429, Retry-After) keeps the latency of the
    searches that are answered near the unloaded one.
    """

    def __init__(self, slots: int, queue_seconds: float) -> None:
        self.slots = slots
        self.queue_seconds = queue_seconds
        # Searches are admitted on the event loop (the search endpoint is async).
        self._semaphore = asyncio.BoundedSemaphore(slots)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self._semaphore.locked():
            try:
                await asyncio.wait_for(self._semaphore.acquire(), self.queue_seconds)
            except TimeoutError:
                raise Overloaded() from None
        else:
            await self._semaphore.acquire()  # a free slot: no timer
        try:
            yield
        finally:
            self._semaphore.release()


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @property
    def open(self) -> bool:
        """No keys configured: loopback-only access without credentials."""
        return not self.keys

    def identify(self, presented: str | None) -> ApiKey:
        if self.open:
            return OPEN_ACCESS
        if not presented:
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
        digest = hash_api_key(presented)
        match = None
        for key in self.keys:  # every key compared, so timing does not reveal which one matched
            if hmac.compare_digest(digest, key.sha256):
                match = key
        if match is None:
            raise Unauthorized("unknown API key")
        return match


def spend(tokens: float, updated: float, capacity: float, now: float) -> tuple[float, float]:
    """A token bucket refilled to `now` (capacity a minute) after one request: (tokens left,
    0.0), or (tokens as refilled, seconds until a token is there) when the request is refused."""
    rate = capacity / 60.0
    tokens = min(capacity, tokens + (now - updated) * rate)
    if tokens < 1.0:
        return tokens, math.ceil((1.0 - tokens) / rate)
    return tokens - 1.0, 0.0


@dataclass
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per caller: `per_minute` requests a minute, bursts up to the same."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, caller: str, per_minute: int | None = None) -> None:
        capacity = float(per_minute or self.per_minute)
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(caller, Bucket(capacity, now))
            tokens, retry_after = spend(bucket.tokens, bucket.updated, capacity, now)
            bucket.tokens, bucket.updated = tokens, now
        if retry_after:
            raise RateLimited(retry_after)

    def close(self) -> None:
        """Nothing to release here; the workers' shared limiter unmaps its file."""

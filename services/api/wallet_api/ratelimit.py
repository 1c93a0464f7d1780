"""Per-client rate limits: a token bucket per client, in bounded memory.

A client is whoever a request is charged to: the principal when authentication is
on, else the peer address. Buckets of clients not seen for a while are full again
by the time they come back, so dropping the longest-unseen ones when the table is
full loses nothing but memory.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from walletkit.stream import trim_oldest


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` requests per second on average, bursts of up to ``burst``; rate 0 turns it off."""

    rate: float = 0.0
    burst: int = 0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 0:
            raise ValueError("rate limit and burst must not be negative")

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class RateLimiter:
    """``retry_after(client)``: 0 when the request may go ahead, else seconds to wait."""

    #: Clients tracked at once (~100 bytes each); the longest-unseen go first.
    MAX_CLIENTS = 100_000

    def __init__(self, limit: RateLimit, clock=time.monotonic) -> None:
        self.limit = limit
        self._capacity = float(max(limit.burst, 1))
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # client -> [tokens, last refill]

    def retry_after(self, client: str) -> float:
        now = self._clock()
        bucket = self._buckets.pop(client, None)  # re-inserted last: insertion order is recency
        if bucket is None:
            bucket = [self._capacity, now]
        else:
            bucket[0] = min(self._capacity, bucket[0] + (now - bucket[1]) * self.limit.rate)
            bucket[1] = now
        self._buckets[client] = bucket
        trim_oldest(self._buckets, self.MAX_CLIENTS)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / self.limit.rate

    @staticmethod
    def header(seconds: float) -> str:
        """``Retry-After`` in whole seconds, at least 1."""
        return str(max(1, math.ceil(seconds)))

"""Token-bucket rate limiting.

``from peak_resilience.rate_limiter import RateLimiter`` is the guide's
``from src.core.rate_limiter import RateLimiter``.

``RateLimiter(max_requests, window_seconds)`` is a bucket holding ``max_requests`` tokens
(the burst), refilled continuously at ``max_requests / window_seconds`` tokens per second,
starting full. 100 per 60 s admits a burst of 100 at once, then one request every 0.6 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, cast

from peak_resilience import _backends, _instances, _shared
from peak_resilience._native import RateLimiter as _NativeLimiter
from peak_resilience._native import TokenBucket
from peak_resilience.errors import RateLimitExceeded

if TYPE_CHECKING:
    from peak_resilience.testing import ManualClock

__all__ = ["RateLimitExceeded", "RateLimiter", "TokenBucket"]

logger = logging.getLogger("peak_resilience.rate_limiter")


def _bucket_stats(bucket: TokenBucket) -> dict[str, Any]:
    allowed, rejected = bucket.allowed, bucket.rejected
    total = allowed + rejected
    return {
        "total_requests": total,
        "allowed": allowed,
        "rejected": rejected,
        "rejection_rate": rejected / total if total else 0.0,
        "tokens_available": bucket.tokens_available,
        "capacity": bucket.capacity,
        "max_requests": bucket.max_requests,
        "window_seconds": bucket.window_seconds,
    }


class RateLimiter(_NativeLimiter):
    """A token bucket per endpoint, plus a default bucket for everything else.

    ``acquire(endpoint=None, cost=1)`` never waits: it takes ``cost`` tokens and returns
    True, or returns False and takes nothing. ``add_endpoint(name, max_requests,
    window_seconds)`` gives an endpoint its own bucket, standing on its own; an endpoint
    never added draws on the default bucket. ``burst`` (default ``max_requests``) sets how
    many tokens a bucket holds when full.

    ``backend`` says where the budget lives: ``"memory"`` (this process, the default),
    ``"shared"`` (a memory-mapped file in ``shared_dir``, one budget for every process of
    the host using the same ``name``) or ``"redis"`` (one budget for every host, at
    ``redis_url``; ``on_backend_error`` and ``redis_timeout`` say what happens when Redis
    cannot be reached). Shared and Redis budgets need a ``name``.
    """

    backend: _backends.Backend = "memory"

    def __new__(
        cls,
        max_requests: int,
        window_seconds: float,
        *,
        burst: int | None = None,
        clock: ManualClock | None = None,
        name: str | None = None,
        backend: _backends.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: _backends.OnBackendError = "local",
        redis_timeout: float = _backends.DEFAULT_REDIS_TIMEOUT,
    ) -> RateLimiter:
        backend = _backends.check_backend(backend)
        shared = None
        if backend == "shared":
            shared = _shared.limiter_prefix(name, shared_dir)
        elif backend == "redis":
            from peak_resilience._redis_limiter import RedisRateLimiter

            if not issubclass(cls, RedisRateLimiter):
                # Python then runs RedisRateLimiter.__init__ on the object returned.
                cls = RedisRateLimiter
        instance = super().__new__(
            cls, max_requests, window_seconds, burst=burst, clock=clock, name=name, shared=shared
        )
        return cast("RateLimiter", instance)

    def __init__(
        self,
        max_requests: int,
        window_seconds: float,
        *,
        burst: int | None = None,
        clock: ManualClock | None = None,
        name: str | None = None,
        backend: _backends.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: _backends.OnBackendError = "local",
        redis_timeout: float = _backends.DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        # The native constructor has validated and stored the rate (and mapped the shared
        # file); the Redis subclass checks its own arguments.
        self._clock = clock
        self.backend = backend
        _instances.limiters.add(self)

    def get_stats(self, endpoint: str | None = None) -> dict[str, Any]:
        """Requests allowed and rejected, the rejection rate and the tokens available.

        Without an endpoint: the totals over every bucket of this limiter, the default
        bucket's tokens, and a breakdown under ``"endpoints"``.
        """
        if endpoint is not None:
            return _bucket_stats(self.bucket_for(endpoint))
        endpoints = {name: _bucket_stats(b) for name, b in self.endpoint_buckets().items()}
        stats = _bucket_stats(self.default_bucket)
        allowed = stats["allowed"] + sum(e["allowed"] for e in endpoints.values())
        rejected = stats["rejected"] + sum(e["rejected"] for e in endpoints.values())
        total = allowed + rejected
        stats.update(
            total_requests=total,
            allowed=allowed,
            rejected=rejected,
            rejection_rate=rejected / total if total else 0.0,
            endpoints=endpoints,
        )
        return stats

    def _export(self) -> list[tuple[str, int, int, float, Any]]:
        """For the metrics collector: (endpoint, allowed, rejected, tokens available,
        shared file or None) per bucket. A shared bucket counts the whole host, so the
        collector counts each shared file once however many objects map it."""
        buckets = [("default", self.default_bucket), *self.endpoint_buckets().items()]
        return [
            (endpoint, b.allowed, b.rejected, b.tokens_available, b.shared_path)
            for endpoint, b in buckets
        ]

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.monotonic()

    def acquire_blocking(
        self, endpoint: str | None = None, *, cost: int = 1, timeout: float | None = None
    ) -> bool:
        """Waits (sleeping) until ``cost`` tokens are taken; False if that would take
        longer than ``timeout`` seconds (None: wait as long as it takes)."""
        sleep = self._clock.sleep if self._clock is not None else time.sleep
        deadline = None if timeout is None else self._now() + timeout
        while not self.acquire(endpoint, cost):
            wait = self.get_wait_time(endpoint, cost)
            if deadline is not None and self._now() + wait > deadline:
                logger.debug("rate limiter %r: no token within %ss", self.name, timeout)
                return False
            sleep(wait)
        return True

    async def acquire_async(
        self, endpoint: str | None = None, *, cost: int = 1, timeout: float | None = None
    ) -> bool:
        """``acquire_blocking`` for asyncio: awaits instead of blocking the loop."""
        deadline = None if timeout is None else self._now() + timeout
        while not self.acquire(endpoint, cost):
            wait = self.get_wait_time(endpoint, cost)
            if deadline is not None and self._now() + wait > deadline:
                return False
            if self._clock is not None:
                self._clock.advance(wait)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(wait)
        return True

    def __repr__(self) -> str:
        bucket = self.default_bucket
        return (
            f"RateLimiter(name={self.name!r}, max_requests={bucket.max_requests}, "
            f"window_seconds={bucket.window_seconds}, burst={bucket.capacity}, "
            f"backend={self.backend!r})"
        )

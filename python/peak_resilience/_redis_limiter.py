"""A rate limiter whose budget lives in Redis: one budget for every host using the key.

Each acquire is one round trip: ``EVALSHA`` of a Lua script that runs GCRA (the same
algorithm as the native bucket) on Redis' own clock (``TIME``), never on the clients'
clocks, which may disagree by more than a token's interval. A bucket is one hash
(``tat``, ``allowed``, ``rejected``) under a key whose ``{...}`` hash tag keeps every
bucket of a limiter in one Redis Cluster slot.

The native in-process buckets of the same settings stay underneath: they validate the
arguments, and they are the fallback when ``on_backend_error="local"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peak_resilience import _backends
from peak_resilience._native import RateLimiter as _NativeLimiter
from peak_resilience._native import TokenBucket
from peak_resilience._redis_link import UNAVAILABLE, RedisLink, Script
from peak_resilience.rate_limiter import RateLimiter, _bucket_stats

if TYPE_CHECKING:
    from peak_resilience.testing import ManualClock

__all__ = ["RedisRateLimiter"]

GCRA = Script(
    """
-- GCRA on Redis' clock. KEYS[1]: the bucket, a hash of tat (theoretical arrival time,
-- us), interval (the one tat was computed with), allowed, rejected. ARGV: interval (us per
-- token), tolerance (us: interval * burst), cost, mode: 'take' takes cost tokens if there
-- are enough (returns 1, else 0); 'peek' changes nothing and returns
-- {wait us, available us, allowed, rejected}.
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tat', 'interval')
local tat = tonumber(state[1]) or 0
if tat < now then tat = now end
local before = tonumber(state[2])
if before and before ~= interval then
  -- The rate changed: the tokens already spent stay spent, as in-process.
  tat = now + math.floor((tat - now) * interval / before)
end
local new_tat = tat + cost * interval
local limit = now + tolerance
if ARGV[4] == 'take' then
  if new_tat <= limit then
    -- %d: a plain number would be written with 14 significant digits and lose the us.
    redis.call('HSET', KEYS[1], 'tat', string.format('%d', new_tat), 'interval', ARGV[1])
    redis.call('HINCRBY', KEYS[1], 'allowed', 1)
    return 1
  end
  redis.call('HINCRBY', KEYS[1], 'rejected', 1)
  return 0
end
local counts = redis.call('HMGET', KEYS[1], 'allowed', 'rejected')
local wait = new_tat - limit
if wait < 0 then wait = 0 end
return {wait, limit - tat, tonumber(counts[1]) or 0, tonumber(counts[2]) or 0}
"""
)

_TAKE = b"take"
_PEEK = b"peek"


@dataclass(frozen=True)
class _RemoteBucket:
    """One bucket's key and its quota in microseconds, encoded once for every call."""

    key: str
    interval: bytes
    tolerance: bytes
    interval_us: int
    burst: int
    #: The packed "take one token" command, the one almost every acquire sends.
    take_one: Any
    #: The local bucket of the same settings: the fallback, and the source of the rate
    #: (``set_rate`` on it changes this budget too) and of ``enabled``.
    native: TokenBucket
    rate: tuple[int, float, int]
    #: This process's verdicts from Redis: [rejected, allowed] (the metrics' per-process
    #: counts; the budget's own, every host's, are in Redis: ``get_stats()``).
    tally: list[int] = field(default_factory=lambda: [0, 0])

    def is_current(self) -> bool:
        native = self.native
        return (native.max_requests, native.window_seconds, native.capacity) == self.rate

    @classmethod
    def of(
        cls, key: str, native: TokenBucket, link: RedisLink, tally: list[int] | None = None
    ) -> _RemoteBucket:
        interval_us = round(native.window_seconds * 1_000_000 / native.max_requests)
        if interval_us < 1:
            raise ValueError(
                f"max_requests={native.max_requests} per window_seconds="
                f"{native.window_seconds} is more than one request per microsecond, "
                "finer than backend='redis' counts"
            )
        burst = native.capacity
        interval, tolerance = str(interval_us).encode(), str(interval_us * burst).encode()
        take_one = link.pack(GCRA, key, interval, tolerance, 1, _TAKE)
        rate = (native.max_requests, native.window_seconds, burst)
        return cls(
            key, interval, tolerance, interval_us, burst, take_one, native, rate, tally or [0, 0]
        )


def _key(name: str, endpoint: str | None) -> str:
    where = "default" if endpoint is None else f"endpoint:{endpoint}"
    return f"peak-resilience:{{limiter:{name}}}:{where}"


class RedisRateLimiter(RateLimiter):
    """``RateLimiter`` with its budget in Redis; built by ``RateLimiter(backend="redis")``."""

    def __init__(
        self,
        max_requests: int,
        window_seconds: float,
        *,
        burst: int | None = None,
        clock: ManualClock | None = None,
        name: str | None = None,
        backend: _backends.Backend = "redis",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: _backends.OnBackendError = "local",
        redis_timeout: float = _backends.DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        if not name:
            raise ValueError(
                "backend='redis' needs a name for the limiter: hosts find the same budget by name"
            )
        if clock is not None:
            raise ValueError(
                "backend='redis' runs on Redis' clock; clock= is for in-process limiters"
            )
        self._on_error = _backends.check_on_backend_error(on_backend_error)
        self._link = RedisLink(redis_url, timeout=redis_timeout, what=f"rate limiter {name!r}")
        #: By endpoint; None is the default bucket.
        self._remote: dict[str | None, _RemoteBucket] = {
            None: _RemoteBucket.of(_key(name, None), self.default_bucket, self._link)
        }
        super().__init__(max_requests, window_seconds, burst=burst, name=name, backend="redis")

    def _bucket(self, endpoint: str | None) -> _RemoteBucket:
        """The endpoint's budget (the default one for an endpoint never added), re-encoded
        when its rate was changed on the local bucket."""
        remote = self._remote
        bucket = remote.get(endpoint) or remote[None]
        if not bucket.is_current():
            where = endpoint if endpoint in remote else None
            bucket = remote[where] = _RemoteBucket.of(
                _key(self.name, where), bucket.native, self._link, bucket.tally
            )
        return bucket

    def acquire(self, endpoint: str | None = None, cost: int = 1) -> bool:
        """Takes ``cost`` tokens from the endpoint's budget in Redis (one round trip)."""
        bucket = self._bucket(endpoint)
        if not bucket.native.enabled:
            return True  # rate_limit_enabled = false: admits everything, as in-process
        if cost == 1:
            reply = self._link.run_packed(GCRA, bucket.take_one)
        elif cost.__class__ is not int or not 0 <= cost <= bucket.burst:
            # The native bucket raises the same errors as an in-process limiter would.
            return _NativeLimiter.acquire(self, endpoint, cost)
        else:
            reply = self._link.run(GCRA, bucket.key, bucket.interval, bucket.tolerance, cost, _TAKE)
        if reply is UNAVAILABLE:
            if self._on_error == "local":
                return _NativeLimiter.acquire(self, endpoint, cost)  # counted natively
            reply = 1 if self._on_error == "fail_open" else 0
        bucket.tally[reply] += 1
        return bool(reply == 1)

    def _export(self) -> list[tuple[str, int, int, float, Any]]:
        """For the metrics collector: this process's requests per bucket (its Redis
        verdicts plus what the local stand-in counted) and the budget's tokens in Redis."""
        rows = []
        for endpoint in (None, *self.endpoint_buckets()):
            bucket = self._bucket(endpoint)
            native = bucket.native
            reply = self._link.run(GCRA, bucket.key, bucket.interval, bucket.tolerance, 0, _PEEK)
            tokens = (
                native.tokens_available
                if reply is UNAVAILABLE
                else int(reply[1]) / bucket.interval_us
            )
            rejected, allowed = bucket.tally
            rows.append(
                (
                    "default" if endpoint is None else endpoint,
                    allowed + native.allowed,
                    rejected + native.rejected,
                    tokens,
                    None,
                )
            )
        return rows

    def get_wait_time(self, endpoint: str | None = None, cost: int = 1) -> float:
        """Seconds until ``cost`` tokens are available in the endpoint's budget."""
        bucket = self._bucket(endpoint)
        if not bucket.native.enabled:
            return 0.0
        if cost.__class__ is not int or not 0 <= cost <= bucket.burst:
            return _NativeLimiter.get_wait_time(self, endpoint, cost)
        reply = self._link.run(GCRA, bucket.key, bucket.interval, bucket.tolerance, cost, _PEEK)
        if reply is UNAVAILABLE:
            if self._on_error == "local":
                return _NativeLimiter.get_wait_time(self, endpoint, cost)
            return 0.0 if self._on_error == "fail_open" else self._link.retry_interval
        return int(reply[0]) / 1_000_000

    def add_endpoint(
        self, name: str, max_requests: int, window_seconds: float, *, burst: int | None = None
    ) -> None:
        """Gives ``name`` its own budget in Redis (and a local one for the fallback)."""
        super().add_endpoint(name, max_requests, window_seconds, burst=burst)
        # Added again: the same local bucket with its new rate, re-encoded on next use.
        self._remote.setdefault(
            name, _RemoteBucket.of(_key(self.name, name), self.bucket_for(name), self._link)
        )

    def _remote_stats(self, endpoint: str | None) -> dict[str, Any]:
        bucket = self._bucket(endpoint)
        native = bucket.native
        reply = self._link.run(GCRA, bucket.key, bucket.interval, bucket.tolerance, 0, _PEEK)
        if reply is UNAVAILABLE:
            stats = _bucket_stats(native)
            stats["redis_available"] = False
            return stats
        _wait, available_us, allowed, rejected = (int(v) for v in reply)
        total = allowed + rejected
        return {
            "total_requests": total,
            "allowed": allowed,
            "rejected": rejected,
            "rejection_rate": rejected / total if total else 0.0,
            "tokens_available": available_us / bucket.interval_us,
            "capacity": bucket.burst,
            "max_requests": native.max_requests,
            "window_seconds": native.window_seconds,
            "redis_available": True,
        }

    def get_stats(self, endpoint: str | None = None) -> dict[str, Any]:
        """As ``RateLimiter.get_stats``, counted in Redis: every host's requests."""
        if endpoint is not None:
            return self._remote_stats(endpoint)
        endpoints = {name: self._remote_stats(name) for name in self.endpoint_buckets()}
        stats = self._remote_stats(None)
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

    @property
    def redis_available(self) -> bool:
        """False while Redis is unreachable (``on_backend_error`` applies meanwhile)."""
        return self._link.available

    #: The native Guard would draw on the local buckets: guard calls in Python instead.
    _guard_in_python = True

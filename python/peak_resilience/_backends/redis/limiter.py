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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peak_resilience._backends import choice as _backends
from peak_resilience._backends.redis.connection import UNAVAILABLE, RedisLink, Script
from peak_resilience._limiter import (
    RateLimiter,
    _bucket_stats,
    _several_windows,
    _window_stats,
)
from peak_resilience._native import RateLimiter as _NativeLimiter
from peak_resilience._native import TokenBucket
from peak_resilience._windows import Limit, window_index

if TYPE_CHECKING:
    from peak_resilience._native import ManualClock

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
local state = redis.call('HMGET', KEYS[1], 'tat', 'interval', 'paused_until')
local tat = tonumber(state[1]) or 0
-- A pause (limiter.pause, e.g. from a 429's Retry-After) refuses everything until then.
local paused = tonumber(state[3]) or 0
if tat < now then tat = now end
local before = tonumber(state[2])
if before and before ~= interval then
  -- The rate changed: the tokens already spent stay spent, as in-process.
  tat = now + math.floor((tat - now) * interval / before)
end
local new_tat = tat + cost * interval
local limit = now + tolerance
if ARGV[4] == 'take' then
  if new_tat <= limit and paused <= now then
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
if paused - now > wait then wait = paused - now end
if wait < 0 then wait = 0 end
return {wait, limit - tat, tonumber(counts[1]) or 0, tonumber(counts[2]) or 0}
"""
)

WINDOWS = Script(
    """
-- Several windows, all or nothing, and what a reservation, a sync and a pause do.
-- KEYS[1]: the bucket, a hash of tat/interval (window 0), tat1/interval1, ... (the
-- others), allowed, rejected and paused_until (us on Redis' clock). ARGV: mode, amount,
-- window index (sync), reserve (tokens a normal call may not use; 0 for priority high),
-- then per window: interval (us per token), tolerance (us: interval * burst).
-- Modes: 'take' amount tokens from every window or none ({1, 0} or {0, wait us});
-- 'peek' ({wait us, allowed, rejected, paused us, available us per window...});
-- 'charge' (forced: may go into debt) and 'refund' (never beyond full) amount tokens in
-- every window; 'sync' window index to amount tokens used now; 'pause' for amount us
-- (0 lifts the pause; a shorter pause never shortens a longer one).
local mode = ARGV[1]
local amount = tonumber(ARGV[2])
local index = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local n = (#ARGV - 4) / 2
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function field(name, i)
  if i == 0 then return name end
  return name .. i
end
local tats, intervals, tolerances = {}, {}, {}
for i = 0, n - 1 do
  local interval = tonumber(ARGV[5 + 2 * i])
  local state = redis.call('HMGET', KEYS[1], field('tat', i), field('interval', i))
  local tat = tonumber(state[1]) or 0
  local before = tonumber(state[2])
  if tat > now and before and before ~= interval then
    tat = now + math.floor((tat - now) * interval / before)
  end
  tats[i], intervals[i], tolerances[i] = tat, interval, tonumber(ARGV[6 + 2 * i])
end
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until')) or 0
local function store(i, tat)
  redis.call('HSET', KEYS[1], field('tat', i), string.format('%d', tat),
             field('interval', i), string.format('%d', intervals[i]))
end
if mode == 'take' or mode == 'peek' then
  local wait = 0
  if paused > now then wait = paused - now end
  for i = 0, n - 1 do
    local tat = math.max(tats[i], now)
    local w = tat + amount * intervals[i] - (now + tolerances[i] - reserve * intervals[i])
    if w > wait then wait = w end
  end
  if mode == 'take' then
    if wait > 0 then
      redis.call('HINCRBY', KEYS[1], 'rejected', 1)
      return {0, wait}
    end
    for i = 0, n - 1 do
      store(i, math.max(tats[i], now) + amount * intervals[i])
    end
    redis.call('HINCRBY', KEYS[1], 'allowed', 1)
    return {1, 0}
  end
  local counts = redis.call('HMGET', KEYS[1], 'allowed', 'rejected')
  local reply = {wait, tonumber(counts[1]) or 0, tonumber(counts[2]) or 0,
                 math.max(paused - now, 0)}
  for i = 0, n - 1 do
    reply[#reply + 1] = math.max(now + tolerances[i] - math.max(tats[i], now), 0)
  end
  return reply
elseif mode == 'charge' then
  for i = 0, n - 1 do store(i, math.max(tats[i], now) + amount * intervals[i]) end
elseif mode == 'refund' then
  for i = 0, n - 1 do store(i, math.max(tats[i] - amount * intervals[i], 0)) end
elseif mode == 'sync' then
  store(index, now + amount * intervals[index])
elseif mode == 'pause' then
  if amount == 0 then
    redis.call('HDEL', KEYS[1], 'paused_until')
  elseif now + amount > paused then
    redis.call('HSET', KEYS[1], 'paused_until', string.format('%d', now + amount))
  end
end
return 1
"""
)

_TAKE = b"take"
_PEEK = b"peek"


@dataclass(frozen=True)
class _RemoteBucket:
    """One bucket's key and its windows in microseconds, encoded once for every call."""

    key: str
    interval: bytes
    #: The first window's tolerance for a normal call (the burst less the reserve).
    tolerance: bytes
    #: ... and for a priority="high" call (the whole burst).
    high_tolerance: bytes
    interval_us: int
    burst: int
    #: The packed "take one token" command, the one almost every acquire sends.
    take_one: Any
    #: The local bucket of the same settings: the fallback, and the source of the rate
    #: (``set_rate`` on it changes this budget too) and of ``enabled``.
    native: TokenBucket
    rate: tuple[Any, ...]
    #: Every window's (interval, tolerance), encoded, for the WINDOWS script.
    windows: tuple[bytes, ...] = ()
    #: Every window's interval (us) and burst, the first first.
    intervals_us: tuple[int, ...] = ()
    bursts: tuple[int, ...] = ()
    reserve: int = 0
    #: This process's verdicts from Redis: [rejected, allowed] (the metrics' per-process
    #: counts; the budget's own, every host's, are in Redis: ``get_stats()``).
    tally: list[int] = field(default_factory=lambda: [0, 0])

    @property
    def several(self) -> bool:
        return len(self.bursts) > 1

    def is_current(self) -> bool:
        native = self.native
        return (
            native.max_requests,
            native.window_seconds,
            native.capacity,
            tuple(native.windows),
            native.priority_reserve,
        ) == self.rate

    def lane_burst(self, high: bool) -> int:
        """The most one call of this lane can ever take."""
        return min(self.bursts) - (0 if high else self.reserve)

    def run(
        self, link: RedisLink, mode: bytes, amount: int, *, index: int = 0, high: bool = True
    ) -> Any:
        """Runs the WINDOWS script in ``mode`` on this bucket."""
        reserve = 0 if high else self.reserve
        return link.run(WINDOWS, self.key, mode, amount, index, reserve, *self.windows)

    @classmethod
    def of(
        cls, key: str, native: TokenBucket, link: RedisLink, tally: list[int] | None = None
    ) -> _RemoteBucket:
        intervals, bursts, encoded = [], [], []
        for max_requests, window_seconds, burst in native.windows:
            interval_us = round(window_seconds * 1_000_000 / max_requests)
            if interval_us < 1:
                raise ValueError(
                    f"max_requests={max_requests} per window_seconds="
                    f"{window_seconds} is more than one request per microsecond, "
                    "finer than backend='redis' counts"
                )
            intervals.append(interval_us)
            bursts.append(burst)
            encoded += [str(interval_us).encode(), str(interval_us * burst).encode()]
        reserve = native.priority_reserve
        interval_us, burst = intervals[0], bursts[0]
        interval = str(interval_us).encode()
        tolerance = str(interval_us * (burst - reserve)).encode()
        high_tolerance = str(interval_us * burst).encode()
        if len(bursts) == 1:
            take_one = link.pack(GCRA, key, interval, tolerance, 1, _TAKE)
        else:
            take_one = link.pack(WINDOWS, key, _TAKE, 1, 0, reserve, *encoded)
        rate = (
            native.max_requests,
            native.window_seconds,
            native.capacity,
            tuple(native.windows),
            reserve,
        )
        return cls(
            key,
            interval,
            tolerance,
            high_tolerance,
            interval_us,
            burst,
            take_one,
            native,
            rate,
            tuple(encoded),
            tuple(intervals),
            tuple(bursts),
            reserve,
            tally or [0, 0],
        )


class RemoteReservation:
    """A reservation on a Redis budget: ``settle(actual)`` charges or refunds the
    difference, ``cancel()`` refunds it all; either once."""

    _sequence = 0

    def __init__(
        self, limiter: RedisRateLimiter, bucket: _RemoteBucket, cost: int, charged: bool
    ) -> None:
        RemoteReservation._sequence += 1
        self.id = RemoteReservation._sequence
        self._limiter = limiter
        self._bucket = bucket
        self.cost = cost
        self._charged = charged
        self.state = "open"

    def _describe(self) -> str:
        return f"reservation #{self.id} of limiter {self._limiter.name!r} (cost {self.cost})"

    def _close(self, to: str) -> None:
        if self.state != "open":
            raise RuntimeError(
                f"{self._describe()} was already {self.state}: a reservation is settled or "
                "cancelled once"
            )
        self.state = to

    def _adjust(self, mode: bytes, amount: int) -> None:
        if self._charged and amount:
            reply = self._bucket.run(self._limiter._link, mode, amount)
            if reply is UNAVAILABLE:
                self._limiter._local_adjust(self._bucket, mode, amount)

    def settle(self, actual: int) -> None:
        """The call really cost ``actual``: charges (forced) or refunds the difference."""
        if actual.__class__ is not int or actual < 0:
            raise ValueError(f"actual must be a non-negative int, got {actual!r}")
        self._close("settled")
        if actual > self.cost:
            self._adjust(b"charge", actual - self.cost)
        else:
            self._adjust(b"refund", self.cost - actual)

    def cancel(self) -> None:
        """The call did not happen: refunds the whole estimate."""
        self._close("cancelled")
        self._adjust(b"refund", self.cost)

    def __repr__(self) -> str:
        return f"<{self._describe()}, {self.state}>"


def _is_high(priority: str | None) -> bool:
    if priority is None or priority == "normal":
        return False
    if priority == "high":
        return True
    raise ValueError(f'priority must be "high" or "normal" (or None), got {priority!r}')


def _key(name: str, endpoint: str | None) -> str:
    where = "default" if endpoint is None else f"endpoint:{endpoint}"
    return f"peak-resilience:{{limiter:{name}}}:{where}"


class RedisRateLimiter(RateLimiter):
    """``RateLimiter`` with its budget in Redis; built by ``RateLimiter(backend="redis")``."""

    def __init__(
        self,
        max_requests: int | None = None,
        window_seconds: float | None = None,
        *,
        burst: int | None = None,
        clock: ManualClock | None = None,
        name: str | None = None,
        backend: _backends.Backend = "redis",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: _backends.OnBackendError = "local",
        redis_timeout: float = _backends.DEFAULT_REDIS_TIMEOUT,
        limits: Sequence[Limit] | None = None,
        priority_reserve: int = 0,
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
        super().__init__(
            max_requests,
            window_seconds,
            burst=burst,
            name=name,
            backend="redis",
            limits=limits,
            priority_reserve=priority_reserve,
        )

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

    def acquire(
        self, endpoint: str | None = None, cost: int = 1, *, priority: str | None = None
    ) -> bool:
        """Takes ``cost`` tokens from the endpoint's budget in Redis (one round trip)."""
        bucket = self._bucket(endpoint)
        if not bucket.native.enabled:
            return True  # rate_limit_enabled = false: admits everything, as in-process
        if cost == 1 and priority is None:
            reply = self._link.run_packed(WINDOWS if bucket.several else GCRA, bucket.take_one)
        else:
            high = _is_high(priority)
            if cost.__class__ is not int or not 0 <= cost <= bucket.lane_burst(high):
                # The native bucket raises the same errors as an in-process limiter would.
                return _NativeLimiter.acquire(self, endpoint, cost, priority=priority)
            if bucket.several:
                reply = bucket.run(self._link, _TAKE, cost, high=high)
            else:
                tolerance = bucket.high_tolerance if high else bucket.tolerance
                reply = self._link.run(GCRA, bucket.key, bucket.interval, tolerance, cost, _TAKE)
        if reply is UNAVAILABLE:
            if self._on_error == "local":
                # counted natively
                return _NativeLimiter.acquire(self, endpoint, cost, priority=priority)
            reply = 1 if self._on_error == "fail_open" else 0
        elif reply.__class__ is list:
            reply = int(reply[0])
        bucket.tally[reply] += 1
        return bool(reply == 1)

    # --- issue 8: reservations, sync, pause ----------------------------------------------

    def reserve(
        self, cost: int = 1, endpoint: str | None = None, *, priority: str | None = None
    ) -> Any:
        """Takes ``cost`` tokens now as an estimate: a reservation to settle with the real
        cost (or cancel), or None when refused (nothing taken)."""
        bucket = self._bucket(endpoint)
        high = _is_high(priority)
        enabled = bucket.native.enabled
        if cost.__class__ is not int or not 0 <= cost <= bucket.lane_burst(high):
            return _NativeLimiter.reserve(self, cost, endpoint, priority=priority)
        if not enabled:
            return RemoteReservation(self, bucket, cost, charged=False)
        reply = bucket.run(self._link, _TAKE, cost, high=high)
        if reply is UNAVAILABLE:
            if self._on_error == "local":
                return _NativeLimiter.reserve(self, cost, endpoint, priority=priority)
            if self._on_error == "fail_open":
                return RemoteReservation(self, bucket, cost, charged=False)
            return None
        taken = int(reply[0])
        bucket.tally[taken] += 1
        return RemoteReservation(self, bucket, cost, charged=True) if taken else None

    def _local_adjust(self, bucket: _RemoteBucket, mode: bytes, amount: int) -> None:
        """A settle while Redis is away: applied to the local stand-in (on_backend_error
        "local"), else dropped, as every other budget change is while Redis is away."""
        if self._on_error == "local":
            if mode == b"charge":
                bucket.native.charge(amount)
            else:
                bucket.native.refund(amount)

    def sync(
        self, used: int, window: str | int | None = None, *, endpoint: str | None = None
    ) -> None:
        """Makes exactly ``used`` tokens count as spent now in ``window`` of the budget in
        Redis (and in the local stand-in)."""
        if used.__class__ is not int or used < 0:
            raise ValueError(f"used must be a non-negative int, got {used!r}")
        super().sync(used, window, endpoint=endpoint)
        bucket = self._bucket(endpoint)
        native = bucket.native
        index = window_index(native.window_labels, [w[1] for w in native.windows], window)
        bucket.run(self._link, b"sync", used, index=index)

    def _remote_buckets(self) -> list[_RemoteBucket]:
        return [self._bucket(endpoint) for endpoint in (None, *self.endpoint_buckets())]

    def pause(self, seconds: float) -> None:
        """Refuses every acquire on every host for ``seconds`` (and locally, for the
        fallback); a shorter pause never shortens a longer one."""
        super().pause(seconds)
        micros = round(seconds * 1_000_000)
        if micros > 0:
            for bucket in self._remote_buckets():
                bucket.run(self._link, b"pause", micros)

    def resume(self) -> None:
        """Lifts a pause at once, on every host."""
        super().resume()
        for bucket in self._remote_buckets():
            bucket.run(self._link, b"pause", 0)

    @property
    def paused_for(self) -> float:
        """Seconds the pause still lasts in Redis (the local one while Redis is away)."""
        longest = 0.0
        for bucket in self._remote_buckets():
            reply = bucket.run(self._link, _PEEK, 0)
            if reply is UNAVAILABLE:
                return RateLimiter.paused_for.fget(self)  # type: ignore[attr-defined,no-any-return]
            longest = max(longest, int(reply[3]) / 1_000_000)
        return longest

    def _export(self) -> list[tuple[str, int, int, float, Any, Any]]:
        """For the metrics collector: this process's requests per bucket (its Redis
        verdicts plus what the local stand-in counted) and the budget's tokens in Redis."""
        rows = []
        for endpoint in (None, *self.endpoint_buckets()):
            bucket = self._bucket(endpoint)
            native = bucket.native
            reply = bucket.run(self._link, _PEEK, 0)
            if reply is UNAVAILABLE:
                levels = native.window_tokens()
                pause = native.paused_for
            else:
                levels = [
                    int(available) / interval
                    for available, interval in zip(reply[4:], bucket.intervals_us, strict=True)
                ]
                pause = int(reply[3]) / 1_000_000
            tokens = min(levels)
            rejected, allowed = bucket.tally
            rows.append(
                (
                    "default" if endpoint is None else endpoint,
                    allowed + native.allowed,
                    rejected + native.rejected,
                    tokens,
                    None,
                    (pause, _several_windows(native.window_labels, levels)),
                )
            )
        return rows

    def get_wait_time(
        self, endpoint: str | None = None, cost: int = 1, *, priority: str | None = None
    ) -> float:
        """Seconds until ``cost`` tokens are available in the endpoint's budget."""
        bucket = self._bucket(endpoint)
        if not bucket.native.enabled:
            return 0.0
        high = _is_high(priority)
        if cost.__class__ is not int or not 0 <= cost <= bucket.lane_burst(high):
            return _NativeLimiter.get_wait_time(self, endpoint, cost, priority=priority)
        reply = bucket.run(self._link, _PEEK, cost, high=high)
        if reply is UNAVAILABLE:
            if self._on_error == "local":
                return _NativeLimiter.get_wait_time(self, endpoint, cost, priority=priority)
            return 0.0 if self._on_error == "fail_open" else self._link.retry_interval
        return int(reply[0]) / 1_000_000

    def add_endpoint(
        self,
        name: str,
        max_requests: int,
        window_seconds: float,
        *,
        burst: int | None = None,
        windows: Any = None,
        priority_reserve: int | None = None,
    ) -> None:
        """Gives ``name`` its own budget in Redis (and a local one for the fallback)."""
        paused = self.paused_for
        super().add_endpoint(
            name,
            max_requests,
            window_seconds,
            burst=burst,
            windows=windows,
            priority_reserve=priority_reserve,
        )
        # Added again: the same local bucket with its new rate, re-encoded on next use.
        bucket = self._remote.setdefault(
            name, _RemoteBucket.of(_key(self.name, name), self.bucket_for(name), self._link)
        )
        if paused > 0:
            bucket.run(self._link, b"pause", round(paused * 1_000_000))

    def _remote_stats(self, endpoint: str | None) -> dict[str, Any]:
        bucket = self._bucket(endpoint)
        native = bucket.native
        reply = bucket.run(self._link, _PEEK, 0)
        if reply is UNAVAILABLE:
            stats = _bucket_stats(native)
            stats["redis_available"] = False
            return stats
        _wait, allowed, rejected, paused_us = (int(v) for v in reply[:4])
        tokens = [
            int(available) / interval
            for available, interval in zip(reply[4:], bucket.intervals_us, strict=True)
        ]
        total = allowed + rejected
        return {
            "total_requests": total,
            "allowed": allowed,
            "rejected": rejected,
            "rejection_rate": rejected / total if total else 0.0,
            "tokens_available": min(tokens),
            "capacity": bucket.burst,
            "max_requests": native.max_requests,
            "window_seconds": native.window_seconds,
            "windows": _window_stats(native.window_labels, native.windows, tokens),
            "priority_reserve": bucket.reserve,
            "paused_for": paused_us / 1_000_000,
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

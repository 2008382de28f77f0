"""A rate limiter's budget in Redis: one budget for every host that uses its name.

The store under a ``RateLimiter(backend="redis")``: the native bucket asks it for each
acquire (one ``EVALSHA`` of ``bucket.lua``, GCRA of one or more windows, the native
bucket's algorithm, on Redis' own clock: the clients' clocks may disagree by more than a
token's interval) and applies ``on_backend_error`` itself when the store answers None
(Redis unreachable). A bucket is one hash under a key whose ``{...}`` hash tag keeps every
bucket of a limiter in one Redis Cluster slot. Times cross to the native bucket in
nanoseconds; Lua counts microseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peak_resilience._backends.redis.connection import UNAVAILABLE, RedisLink, RedisStore, Script

if TYPE_CHECKING:
    from peak_resilience._native import ManualClock

__all__ = ["BUCKET", "RedisBucketStore", "RedisLimiterStore", "taken"]

BUCKET = Script.load("bucket.lua")

_NS_PER_US = 1000
#: How bucket.lua names each kind of window.
_KIND_CODES = {"fixed": b"f", "sliding": b"s"}
_TAKE = b"take"
_PEEK = b"peek"


def taken(reply: Any) -> tuple[bool, int]:
    """A take's reply as the native bucket reads it: (admitted, ns to wait)."""
    return reply[0] == 1, int(reply[1]) * _NS_PER_US


class RedisLimiterStore(RedisStore):
    """A limiter's budgets in Redis: makes the store of each of its buckets."""

    def __init__(self, name: str, link: RedisLink, clock: ManualClock | None) -> None:
        super().__init__(link, clock)
        self.name = name

    def bucket(self, endpoint: str | None) -> RedisBucketStore:
        where = "default" if endpoint is None else f"endpoint:{endpoint}"
        key = f"peak-resilience:{{limiter:{self.name}}}:{where}"
        return RedisBucketStore(self.link, key, self._clock)


class RedisBucketStore(RedisStore):
    """One bucket in Redis (see ``rust/python/store.rs`` for the protocol)."""

    def __init__(self, link: RedisLink, key: str, clock: ManualClock | None) -> None:
        super().__init__(link, clock)
        self.key = key
        self._windows: tuple[bytes, ...] = ()
        self._intervals: tuple[int, ...] = ()
        self._reserve = 0
        #: The packed "take one token" commands (normal, high), the ones almost every
        #: acquire sends: packing costs more than the script runs on the server.
        self._take_one: tuple[Any, Any] | None = None

    def configure(self, windows: list[tuple[int, int, str]], reserve: int) -> None:
        """Encodes the native bucket's windows once: (interval ns, burst, "bucket") for a
        token bucket, (length ns, requests, "fixed" | "sliding") for the others."""
        encoded: list[bytes] = []
        intervals: list[int] = []
        for interval, burst, kind in windows:
            interval_us = -(-interval // _NS_PER_US)  # up: never faster than the rate
            if kind != "bucket":
                if interval % _NS_PER_US:
                    raise ValueError(
                        f"a {kind} window of {interval} ns is not a whole number of "
                        "microseconds, which backend='redis' counts in"
                    )
                encoded += [_KIND_CODES[kind], str(interval_us).encode(), str(burst).encode()]
                intervals.append(1)  # 'peek' reports these windows' requests as they are
                continue
            if interval < _NS_PER_US // 2:
                raise ValueError(
                    f"a window of one request every {interval} ns is finer than "
                    "backend='redis' counts (one request per microsecond at most)"
                )
            encoded += [b"b", str(interval_us).encode(), str(interval_us * burst).encode()]
            intervals.append(interval_us)
        self._windows = tuple(encoded)
        self._intervals = tuple(intervals)
        self._reserve = reserve
        self._take_one = None
        if self._clock is None:
            self._take_one = (
                self.link.pack(BUCKET, self.key, _TAKE, 1, 0, reserve, b"", *encoded),
                self.link.pack(BUCKET, self.key, _TAKE, 1, 0, 0, b"", *encoded),
            )

    def _arguments(
        self, mode: bytes, amount: int, *, index: int | str = 0, high: bool = True
    ) -> tuple[Any, ...]:
        """The script's ARGV for ``mode`` (after its key)."""
        reserve = 0 if high else self._reserve
        return (mode, amount, index, reserve, self.now(), *self._windows)

    def take_arguments(self, cost: int, high: bool) -> tuple[Any, ...]:
        """The ARGV of a take of ``cost`` (for ``admission.lua``)."""
        return self._arguments(_TAKE, cost, high=high)

    def _run(self, mode: bytes, amount: int, *, index: int | str = 0, high: bool = True) -> Any:
        return self.link.run(
            BUCKET, self.key, *self._arguments(mode, amount, index=index, high=high)
        )

    def take_command(self, cost: int, high: bool) -> Any:
        """The packed take of ``cost`` (in the lane ``high`` says)."""
        if cost == 1 and self._take_one is not None:
            return self._take_one[high]
        return self.link.pack(BUCKET, self.key, *self._arguments(_TAKE, cost, high=high))

    def refund_command(self, cost: int) -> Any:
        """The packed refund of ``cost`` tokens taken and not used."""
        return self.link.pack(BUCKET, self.key, *self._arguments(b"refund", cost))

    def take(self, cost: int, high: bool) -> tuple[bool, int] | None:
        reply = self.link.run_packed(BUCKET, self.take_command(cost, high))
        return None if reply is UNAVAILABLE else taken(reply)

    def peek(self, cost: int, high: bool) -> tuple[int, int, int, int, list[float]] | None:
        reply = self._run(_PEEK, cost, high=high)
        if reply is UNAVAILABLE:
            return None
        wait, allowed, rejected, paused = (int(v) for v in reply[:4])
        tokens = [
            int(available) / interval
            for available, interval in zip(reply[4:], self._intervals, strict=True)
        ]
        return wait * _NS_PER_US, allowed, rejected, paused * _NS_PER_US, tokens

    def reserve(self, cost: int, high: bool) -> tuple[bool, int, list[int]] | None:
        """A take that also says what it left in each window (``bucket.lua``'s records),
        which bound the refund of its settlement (``give_back``)."""
        reply = self._run(b"reserve", cost, high=high)
        if reply is UNAVAILABLE:
            return None
        admitted, wait = taken(reply)
        return admitted, wait, [int(record) for record in reply[2:]]

    def give_back(self, amount: int, records: list[int]) -> bool | None:
        """Refunds ``amount`` of the reservation whose take left ``records``: in each
        window no more than it still owes."""
        # The records ride in the index argument, which a refund has no other use for.
        records_text = ",".join(str(record) for record in records)
        reply = self._run(b"give_back", amount, index=records_text)
        return None if reply is UNAVAILABLE else True

    def adjust(self, amount: int, charge: bool) -> bool | None:
        reply = self._run(b"charge" if charge else b"refund", amount)
        return None if reply is UNAVAILABLE else True

    def sync(self, window: int, used: int) -> bool | None:
        reply = self._run(b"sync", used, index=window)
        return None if reply is UNAVAILABLE else True

    def pause(self, nanos: int) -> bool | None:
        micros = 0 if nanos == 0 else max(round(nanos / _NS_PER_US), 1)
        reply = self._run(b"pause", micros)
        return None if reply is UNAVAILABLE else True

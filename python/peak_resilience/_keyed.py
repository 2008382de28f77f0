"""Per-key budgets: one limiter configured once, keyed at call time (issue 13).

``limiter.for_key("BTCUSDT")`` is the budget of that key (a symbol, an account, an IP):
a bucket with the limiter's own windows, made on first use as the limiter's endpoint
``"key:BTCUSDT"`` (so on the limiter's backend: one budget per key for every process
and host that shares the limiter's name). Memory stays bounded: a key unused for
``key_idle_after`` seconds (by default its longest window, after which its bucket is full
again and forgetting it loses nothing) is forgotten when a new key arrives, and past
``max_keys`` the least recently used key is forgotten even if busy (logged: it comes
back with a full budget). Metrics labels of keys fold into "other" past the families'
bound (``_bucket_series``).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from peak_resilience import _instances
from peak_resilience._logging import limiter_log as logger
from peak_resilience._native import Reservation, TokenBucket
from peak_resilience._windows import window_index


class RateLimiter(Protocol):
    """What the keys use of their limiter (``_limiter.RateLimiter``, which imports this
    module); a ``KeyBudget`` calls its public methods of the same names."""

    @property
    def name(self) -> str: ...
    @property
    def default_bucket(self) -> TokenBucket: ...
    def remove_endpoint(self, name: str) -> TokenBucket | None: ...
    def bucket_for(self, endpoint: str | None = None) -> TokenBucket: ...
    def _add_like_default(self, name: str) -> None: ...


#: Keys a limiter keeps at most unless told otherwise.
DEFAULT_MAX_KEYS = 10_000
#: ``checked_bounds`` of the defaults: what most limiters share rather than a tuple each.
DEFAULT_BOUNDS: tuple[int, float | None] = (DEFAULT_MAX_KEYS, None)
#: Before a key in its endpoint's name: keys never meet the endpoints added by name.
KEY_PREFIX = "key:"
#: How often forgetting a busy key is logged.
_WARN_INTERVAL = 60.0


def checked_bounds(max_keys: object, idle_after: object) -> tuple[int, float | None]:
    if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
        raise ValueError(f"max_keys must be a positive int, got {max_keys!r}")
    if idle_after is None:
        return max_keys, None
    if (
        isinstance(idle_after, bool)
        or not isinstance(idle_after, (int, float))
        or not math.isfinite(idle_after)
        or idle_after <= 0
    ):
        raise ValueError(f"key_idle_after must be a positive number of seconds, got {idle_after!r}")
    return max_keys, float(idle_after)


class Keys:
    """The key budgets of one limiter, least recently used first."""

    def __init__(
        self,
        max_keys: object = DEFAULT_MAX_KEYS,
        idle_after: object = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_keys, self._idle_after = checked_bounds(max_keys, idle_after)
        #: The limiter's clock (its ManualClock in tests).
        self._now = now
        #: key -> when it was last used
        self._last_used: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()
        #: Keys forgotten while their budget was still in use (past ``max_keys``).
        self.evicted_busy = 0
        #: Keys forgotten in all.
        self.evicted = 0
        self._warned_at: float | None = None

    def __len__(self) -> int:
        return len(self._last_used)

    def __contains__(self, key: str) -> bool:
        return key in self._last_used

    def touch(self, limiter: RateLimiter, key: str) -> TokenBucket:
        """Marks ``key`` used now, giving it a bucket first if it has none; its bucket
        (read under the lock: one that another thread forgets at once is still this
        key's, never the limiter's own)."""
        now = self._now()
        last_used = self._last_used
        endpoint = KEY_PREFIX + key
        with self._lock:
            if key in last_used:
                last_used.move_to_end(key)
                last_used[key] = now
                return limiter.bucket_for(endpoint)
            self._forget_idle(limiter, now)
            while len(last_used) >= self.max_keys:
                oldest, _ = last_used.popitem(last=False)
                self._forget(limiter, oldest)
                self.evicted_busy += 1
                self._warn(limiter)
            limiter._add_like_default(endpoint)
            last_used[key] = now
            return limiter.bucket_for(endpoint)

    def idle_after(self, limiter: RateLimiter) -> float:
        """Seconds unused after which a key is forgotten (its longest window unless set)."""
        if self._idle_after is not None:
            return self._idle_after
        return max(seconds for _, seconds, _ in limiter.default_bucket.windows)

    def _forget_idle(self, limiter: RateLimiter, now: float) -> None:
        idle_before = now - self.idle_after(limiter)
        last_used = self._last_used
        while last_used:
            key, used = next(iter(last_used.items()))
            if used > idle_before:
                return
            del last_used[key]
            self._forget(limiter, key)

    def _forget(self, limiter: RateLimiter, key: str) -> None:
        endpoint = KEY_PREFIX + key
        bucket = limiter.remove_endpoint(endpoint)
        self.evicted += 1
        if bucket is not None:
            # What it counted stays counted (under its series, or its limiter's "other").
            _instances.retire_bucket(limiter.name, endpoint, bucket)

    def _warn(self, limiter: RateLimiter) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= _WARN_INTERVAL:
            self._warned_at = now
            logger.warning(
                "rate limiter %r: more than max_keys=%d keys in use; the least recently "
                "used is forgotten and starts again with a full budget (%d so far)",
                limiter.name,
                self.max_keys,
                self.evicted_busy,
            )


class KeyBudget:
    """The budget of one key of a limiter: ``limiter.for_key(key)``.

    Every method is the limiter's of the same name for this key's bucket; each use marks
    the key used (and brings its bucket back if it had been forgotten meanwhile)."""

    __slots__ = ("_keys", "endpoint", "key", "limiter")

    def __init__(self, limiter: Any, keys: Keys, key: str) -> None:
        # Any: the limiter's class imports this module (its methods are the documented
        # RateLimiter ones).
        self.limiter = limiter
        self._keys = keys
        self.key = key
        #: The limiter's endpoint this key's bucket is (``"key:<key>"``).
        self.endpoint = KEY_PREFIX + key

    def _used(self) -> str:
        self._keys.touch(self.limiter, self.key)
        return self.endpoint

    @property
    def bucket(self) -> TokenBucket:
        """This key's bucket now (made again if it had been forgotten)."""
        return self._keys.touch(self.limiter, self.key)

    def acquire(self, cost: int = 1, *, priority: str | None = None) -> bool:
        """Takes ``cost`` tokens of this key's budget now, or returns False (never waits)."""
        return self.bucket.acquire(cost, priority=priority)

    def get_wait_time(self, cost: int = 1, *, priority: str | None = None) -> float:
        """Seconds until ``cost`` tokens of this key's budget are available."""
        return self.bucket.wait_time(cost, priority=priority)

    def reserve(self, cost: int = 1, *, priority: str | None = None) -> Reservation | None:
        """``RateLimiter.reserve`` on this key's budget."""
        return self.bucket.reserve(cost, priority=priority)

    def acquire_blocking(
        self, *, cost: int = 1, timeout: float | None = None, priority: str | None = None
    ) -> bool:
        """``RateLimiter.acquire_blocking`` on this key's budget."""
        return bool(
            self.limiter.acquire_blocking(
                self._used(), cost=cost, timeout=timeout, priority=priority
            )
        )

    async def acquire_async(
        self, *, cost: int = 1, timeout: float | None = None, priority: str | None = None
    ) -> bool:
        """``RateLimiter.acquire_async`` on this key's budget."""
        return bool(
            await self.limiter.acquire_async(
                self._used(), cost=cost, timeout=timeout, priority=priority
            )
        )

    def sync(self, used: int, window: str | int | None = None) -> None:
        """``RateLimiter.sync`` on this key's budget."""
        bucket = self.bucket
        bucket.sync(
            used, window_index(bucket.window_labels, [w[1] for w in bucket.windows], window)
        )

    def observe(self, status: int, headers: Mapping[str, Any]) -> None:
        """``RateLimiter.observe`` of a reply about this key's budget; a refusal pauses
        this key only."""
        self.limiter._observe_reply(status, headers, self._used(), True)

    def get_stats(self) -> dict[str, Any]:
        """``RateLimiter.get_stats`` of this key's budget."""
        stats: dict[str, Any] = self.limiter.get_stats(self._used())
        return stats

    def __repr__(self) -> str:
        return f"KeyBudget(limiter={self.limiter.name!r}, key={self.key!r})"

"""The rate limiter's Python face over the native token buckets.

Re-exported as ``peak_resilience.rate_limiter.RateLimiter`` (the guide's
``from src.core.rate_limiter import RateLimiter``).

``RateLimiter(max_requests, window_seconds)`` is a bucket holding ``max_requests`` tokens
(the burst), refilled continuously at ``max_requests / window_seconds`` tokens per second,
starting full. 100 per 60 s admits a burst of 100 at once, then one request every 0.6 s.

What an exchange's budget needs beyond that (issue 8):

- several windows at once, all or nothing: ``RateLimiter(limits=["1200/60s", "50/10s",
  "160000/1d"])`` admits a call only if every window admits it and takes from none
  otherwise;
- ``reserve(cost)`` takes an estimated weight now and returns a ``Reservation`` (None when
  refused) whose ``settle(actual)`` charges or refunds the difference and whose
  ``cancel()`` refunds it all;
- ``sync(used, window=...)`` makes the local state match the usage the exchange reports;
- ``priority_reserve=N`` keeps N tokens of every window for ``priority="high"`` calls
  (cancels, risk reductions): normal calls cannot use them;
- ``pause(seconds)`` (a 429's Retry-After) refuses everything, in every process sharing the
  budget, until then.

Issue 13: ``observe(status, headers)`` feeds ``sync`` and ``pause`` from an exchange's
reply (``_observe``); ``for_key(key)`` gives each key a budget of its own (``_keyed``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from peak_resilience import _instances
from peak_resilience._backends import choice
from peak_resilience._backends.place import place
from peak_resilience._backends.redis import awaited
from peak_resilience._bucket_series import DEFAULT_ENDPOINT
from peak_resilience._bucket_series import series as bucket_series
from peak_resilience._events import NO_LISTENERS, Listener, Listeners, watch_outages
from peak_resilience._keyed import (
    DEFAULT_BOUNDS,
    DEFAULT_MAX_KEYS,
    KeyBudget,
    Keys,
    checked_bounds,
)
from peak_resilience._labels import label_value
from peak_resilience._logging import limiter_log as logger
from peak_resilience._native import ManualClock, TokenBucket
from peak_resilience._native import RateLimiter as _NativeLimiter
from peak_resilience._observe import Observer, ReplyHeaders, reply_headers
from peak_resilience._waiting_line import Attempt, line_for
from peak_resilience._windows import (
    Kind,
    Limit,
    Window,
    native_kinds,
    parse_limits,
    window_index,
)

T = TypeVar("T")
#: Held while a limiter makes its own ``_Rare`` or its key table (once per limiter that
#: has listeners, keys or an observer).
_making_own = threading.Lock()


class _Rare:
    """What a limiter seldom has of its own: a test clock, listeners, a reply observer, a
    key table (or its bounds until the first ``for_key``), and whether its counts outlive
    it. Most limiters have none of these: they share one of the two defaults below until
    they need their own (``RateLimiter._own``), and keep one slot rather than five, 32
    bytes a limiter (issue 19)."""

    __slots__ = ("clock", "is_default", "keeps_counts", "keys", "listeners", "observer")

    def __init__(
        self,
        keeps_counts: bool,
        *,
        clock: ManualClock | None = None,
        keys: Keys | tuple[int, float | None] = DEFAULT_BOUNDS,
        is_default: bool = False,
    ) -> None:
        self.keeps_counts = keeps_counts
        self.clock = clock
        self.keys = keys
        self.listeners: Listeners = NO_LISTENERS
        self.observer: Observer | None = None
        #: One of the defaults, shared by many limiters: never changed.
        self.is_default = is_default

    def own_copy(self) -> _Rare:
        rare = _Rare(self.keeps_counts, clock=self.clock, keys=self.keys)
        rare.listeners, rare.observer = self.listeners, self.observer
        return rare


#: What a named limiter (its counts kept once it goes) and an unnamed one have, shared.
_NAMED = _Rare(True, is_default=True)
_UNNAMED = _Rare(False, is_default=True)

__all__ = ["RateLimiter"]


def _bucket_stats(bucket: TokenBucket, unused_paused_for: float = 0.0) -> dict[str, Any]:
    """One bucket's budget read at once: every host's counts for a Redis budget (and
    whether Redis answered), every process's for a shared one. For the blank of an
    endpoint not used yet, ``unused_paused_for`` is its pause."""
    allowed, rejected, tokens, paused, available = bucket.read()
    if bucket.blank:
        paused = unused_paused_for
    total = allowed + rejected
    stats = {
        "total_requests": total,
        "allowed": allowed,
        "rejected": rejected,
        "rejection_rate": rejected / total if total else 0.0,
        "tokens_available": min(tokens),
        "capacity": bucket.capacity,
        "max_requests": bucket.max_requests,
        "window_seconds": bucket.window_seconds,
        "windows": _window_stats(bucket.window_labels, bucket.windows, tokens),
        "priority_reserve": bucket.priority_reserve,
        "paused_for": paused,
    }
    if available is not None:
        stats["redis_available"] = available
    return stats


# strict=False below: another process may change a shared budget's windows between the
# reads of their names and of their tokens; a scrape then shows the windows both agree on.
def _window_stats(
    labels: Sequence[str], windows: Sequence[tuple[int, float, int]], tokens: Sequence[float]
) -> list[dict[str, Any]]:
    return [
        {
            "window": label,
            "max_requests": max_requests,
            "window_seconds": seconds,
            "capacity": burst,
            "tokens_available": available,
        }
        for label, (max_requests, seconds, burst), available in zip(
            labels, windows, tokens, strict=False
        )
    ]


def _several_windows(labels: list[str], tokens: list[float]) -> list[tuple[str, float]]:
    """(window, tokens) per window for the per-window gauge; none for a bucket of one
    window, whose tokens gauge already says it all."""
    return list(zip(labels, tokens, strict=False)) if len(labels) > 1 else []


def _rate_arguments(
    max_requests: int | None, window_seconds: float | None, limits: Sequence[Limit] | None
) -> tuple[int, float, list[tuple[int, float]] | None, list[Kind] | None]:
    """The first window, the others (as pairs) and every window's kind (None: all token
    buckets), from the guide's pair and/or ``limits``."""
    windows = None if limits is None else parse_limits(limits)
    if max_requests is None and window_seconds is None:
        if not windows:
            raise TypeError(
                "RateLimiter needs max_requests and window_seconds, or limits=['1200/60s', ...]"
            )
        all_windows = windows
        (max_requests, window_seconds, _), windows = windows[0], windows[1:]
    elif max_requests is None or window_seconds is None:
        raise TypeError("RateLimiter needs both max_requests and window_seconds (or limits=)")
    else:
        all_windows = [Window(max_requests, window_seconds), *(windows or [])]
    pairs = None if windows is None else [(w.requests, w.seconds) for w in windows]
    return max_requests, window_seconds, pairs, native_kinds([w.kind for w in all_windows])


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

    ``limits`` gives the budget several windows (``["1200/60s", "50/10s"]``, or
    ``(max_requests, window_seconds)`` pairs), all or nothing, beside or instead of the
    ``max_requests``/``window_seconds`` pair (which, when given, is the first window). A
    window written ``"1200/1m fixed"`` counts per calendar interval aligned to UTC, one
    written ``"10/1s sliding"`` never admits more than 10 in any interval of 1 s; the
    others are token buckets.
    ``priority_reserve`` tokens of every window are kept for ``priority="high"``.

    ``for_key(key)`` is the budget of one key (a symbol, an account, an IP) with these
    windows, made on first use; at most ``max_keys`` are kept, and one unused for
    ``key_idle_after`` seconds (default: its longest window) is forgotten.
    ``observe(status, headers)`` applies an exchange's reply to the budget.
    """

    # No instance dict, and no key table or listeners until one is used: a process may
    # hold 100,000 limiters (one per symbol), each a few hundred bytes (issue 19).
    __slots__ = ("_rare",)

    _rare: _Rare

    def __new__(
        cls,
        max_requests: int | None = None,
        window_seconds: float | None = None,
        *,
        burst: int | None = None,
        clock: ManualClock | None = None,
        name: str | None = None,
        backend: choice.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: choice.OnBackendError = "local",
        redis_timeout: float = choice.DEFAULT_REDIS_TIMEOUT,
        limits: Sequence[Limit] | None = None,
        priority_reserve: int = 0,
        max_keys: int = DEFAULT_MAX_KEYS,
        key_idle_after: float | None = None,
    ) -> RateLimiter:
        where = place(
            "limiter",
            backend,
            name,
            shared_dir=shared_dir,
            redis_url=redis_url,
            redis_timeout=redis_timeout,
            on_backend_error=on_backend_error,
            clock=clock,
        )
        first, length, windows, kinds = _rate_arguments(max_requests, window_seconds, limits)
        instance = super().__new__(
            cls,
            first,
            length,
            burst=burst,
            clock=clock,
            name=name,
            windows=windows,
            kinds=kinds,
            priority_reserve=priority_reserve,
            **where.keywords(on_backend_error),
        )
        return cast("RateLimiter", instance)

    def __init__(
        self,
        max_requests: int | None = None,
        window_seconds: float | None = None,
        *,
        burst: int | None = None,
        clock: ManualClock | None = None,
        name: str | None = None,
        backend: choice.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: choice.OnBackendError = "local",
        redis_timeout: float = choice.DEFAULT_REDIS_TIMEOUT,
        limits: Sequence[Limit] | None = None,
        priority_reserve: int = 0,
        max_keys: int = DEFAULT_MAX_KEYS,
        key_idle_after: float | None = None,
    ) -> None:
        # The native constructor has validated and stored the rate, and put the budget
        # where the backend says (shared files mapped, a Redis store attached).
        # An unnamed one has a name of its own ("...-<n>") that nothing else shares or
        # re-creates: its series may simply go with it.
        keeps_counts = name is not None
        bounds = checked_bounds(max_keys, key_idle_after)
        if clock is None and bounds == DEFAULT_BOUNDS:
            self._rare = _NAMED if keeps_counts else _UNNAMED
        else:
            self._rare = _Rare(keeps_counts, clock=clock, keys=bounds)
        watch_outages(self, "limiter")
        _instances.limiters.add(self)

    def __del__(self) -> None:
        # It leaves the live objects here, before a reference cycle it may be in is
        # cleared, and what it counted stays counted under its name (see _instances). At
        # interpreter exit the module may be gone: nothing is left to export then.
        with contextlib.suppress(Exception):
            if getattr(getattr(self, "_rare", None), "keeps_counts", False):
                _instances.retire_limiter(self)
            else:
                _instances.limiters.discard(self)

    def _own(self) -> _Rare:
        """This limiter's own ``_Rare``, made now from the shared default if it has none
        yet (under a lock: two threads' first changes land in one)."""
        rare = self._rare
        if rare.is_default:
            with _making_own:
                rare = self._rare
                if rare.is_default:
                    rare = self._rare = rare.own_copy()
        return rare

    @property
    def _clock(self) -> ManualClock | None:
        """The test clock given, or None (the host's monotonic clock)."""
        return self._rare.clock

    @property
    def _listeners(self) -> Listeners:
        return self._rare.listeners

    @_listeners.setter
    def _listeners(self, listeners: Listeners) -> None:
        self._own().listeners = listeners

    def add_listener(self, listener: Listener) -> None:
        """Calls ``listener(event)`` on each of this limiter's events: every
        ``CallRefused`` of a call it guards (``with_resilience(...,
        use_rate_limiter=True)``) and its Redis' ``BackendOutage``. A listener that
        raises is logged and skipped, never reaching the call."""
        rare = self._own()
        if rare.listeners is NO_LISTENERS:
            with _making_own:
                if rare.listeners is NO_LISTENERS:
                    rare.listeners = Listeners()
        rare.listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stops telling ``listener``; ValueError if it was not listening."""
        self._rare.listeners.remove(listener)

    @property
    def backend(self) -> choice.Backend:
        """Where the budget lives: ``"memory"``, ``"shared"`` or ``"redis"``."""
        if self.store is not None:
            return "redis"
        return "memory" if self.default_bucket.shared_path is None else "shared"

    @property
    def redis_available(self) -> bool:
        """False while the Redis store cannot be reached (``on_backend_error`` applies
        meanwhile); True for a limiter on any other backend."""
        store = self.store
        return True if store is None else bool(store.available)

    def get_stats(self, endpoint: str | None = None) -> dict[str, Any]:
        """Requests allowed and rejected, the rejection rate and the tokens available.

        Without an endpoint: the totals over every bucket of this limiter, the default
        bucket's tokens, and a breakdown under ``"endpoints"``.
        """
        # Read as they are: an endpoint not used yet is not made by being looked at.
        unused_paused_for = self._unused_paused_for
        if endpoint is not None:
            return _bucket_stats(self._bucket_to_read(endpoint), unused_paused_for)
        endpoints = {
            name: _bucket_stats(b, unused_paused_for)
            for name, b in self._endpoint_buckets_to_read().items()
        }
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

    def _export(self) -> list[tuple[str, int, int, float, Any, Any]]:
        """For the metrics collector: (endpoint label, allowed, rejected, tokens available,
        shared file or None, (seconds paused, [(window, tokens)] for a bucket of several
        windows)) per bucket. A shared bucket counts the whole host, so the collector
        counts each shared file once however many objects map it."""
        rows = []
        name = self.name
        unused_paused_for = self._unused_paused_for
        for endpoint, bucket in (
            (DEFAULT_ENDPOINT, self.default_bucket),
            # An endpoint not used yet reads as its blank: a scrape makes no bucket.
            *self._endpoint_buckets_to_read().items(),
        ):
            # One read of the budget (one trip to Redis); the counts are this process's
            # (for Redis: its verdicts and its stand-in's), summed over processes by
            # Prometheus.
            _, _, tokens, paused, _ = bucket.read()
            if bucket.blank:
                paused = unused_paused_for
            rows.append(
                (
                    bucket_series.label(name, endpoint, bucket),
                    bucket.allowed,
                    bucket.rejected,
                    min(tokens),
                    bucket.shared_path,
                    (paused, _several_windows(bucket.window_labels, tokens)),
                )
            )
        return rows

    def add_endpoint(  # type: ignore[override]
        self,
        name: str,
        max_requests: int | None = None,
        window_seconds: float | None = None,
        *,
        burst: int | None = None,
        windows: Sequence[Limit | tuple[int, float, int]] | None = None,
        priority_reserve: int | None = None,
    ) -> None:
        """Gives ``name`` its own bucket, standing on its own beside the default one;
        adding it again changes its windows in place. ``windows`` are written as for
        ``limits=`` (``["1200/1m fixed", "10/1s sliding"]``), after or instead of the
        ``max_requests``/``window_seconds`` pair."""
        if windows is not None and not any(isinstance(w, str) for w in windows):
            # Pairs and (max_requests, window_seconds, burst) triples: token buckets, as
            # the native method takes them.
            tuples = cast("Sequence[tuple[int, float] | tuple[int, float, int]]", windows)
            super().add_endpoint(
                name,
                max_requests,  # type: ignore[arg-type]  # the native method names a None
                window_seconds,  # type: ignore[arg-type]
                burst=burst,
                windows=tuples,
                priority_reserve=priority_reserve,
            )
        else:
            first, length, more, kinds = _rate_arguments(
                max_requests, window_seconds, cast("Sequence[Limit] | None", windows)
            )
            super().add_endpoint(
                name,
                first,
                length,
                burst=burst,
                windows=more,
                kinds=kinds,
                priority_reserve=priority_reserve,
            )
        if self._rare.observer is not None:
            self._rare.observer.forget()  # the headers to look for follow the windows

    def _add_like_default(self, name: str) -> None:
        """Gives endpoint ``name`` a bucket of the default bucket's windows, counted
        the same ways (a key's budget)."""
        bucket = self.default_bucket
        (requests, seconds, burst), *others = bucket.windows
        super().add_endpoint(
            name,
            requests,
            seconds,
            burst=burst,
            windows=others,
            kinds=bucket.window_kinds,
            priority_reserve=bucket.priority_reserve,
        )

    # --- issue 13: budgets fed by the exchange's replies ---------------------------------

    def set_reply_headers(
        self,
        preset: str | ReplyHeaders = "auto",
        *,
        used: Mapping[str, str | int | tuple[str | None, str | int]] | None = None,
        orders_endpoint: str | None = "orders",
        retry_after: float = 1.0,
    ) -> None:
        """Says which headers ``observe`` reads: a preset (``"binance"``, ``"generic"``,
        ``"auto"``: both, the default; ``"none"``), more headers by name (``used=
        {"x-my-weight": "1m"}``, or ``(endpoint, window)``), the endpoint whose budget
        Binance's order counts go to, and how long a 429 without ``Retry-After`` pauses."""
        self._own().observer = Observer(
            reply_headers(
                preset, used=used, orders_endpoint=orders_endpoint, retry_after=retry_after
            )
        )

    def observe(self, status: int, headers: Any, endpoint: str | None = None) -> None:
        """Applies what an exchange's reply says about the budget of ``endpoint``: a
        used-weight or order-count header makes its window count exactly that much
        (``sync``); a 429 pauses for its ``Retry-After`` (seconds or an HTTP date), a 418
        (an IP ban) for at least 2 minutes, twice as long for each 418 in a row. Header
        names are matched whatever their case. Never raises: a header that cannot be read
        is logged (at most once a minute each) and ignored."""
        self._observe_reply(status, headers, endpoint, False)

    def _observe_reply(
        self, status: int, headers: Any, endpoint: str | None, endpoint_only: bool
    ) -> None:
        observer = self._rare.observer
        if observer is None:
            rare = self._own()
            observer = rare.observer
            if observer is None:
                observer = rare.observer = Observer(ReplyHeaders())
        observer.observe(self, status, headers, endpoint, endpoint_only)

    # --- issue 13: per-key budgets -------------------------------------------------------

    def for_key(self, key: str) -> KeyBudget:
        """The budget of ``key`` (a symbol, an account, an IP): a bucket with this
        limiter's windows, made on first use, on this limiter's backend. At most
        ``max_keys`` are kept; one unused for ``key_idle_after`` seconds is forgotten."""
        keys = self._rare.keys
        if type(keys) is tuple:
            keys = self._key_table()
        keys = cast("Keys", keys)  # (mypy does not narrow on ``type(...) is``)
        known = isinstance(key, str) and key in keys  # a known key was checked already
        return KeyBudget(self, keys, key if known else label_value(key, "key"))

    def _key_table(self) -> Keys:
        """The key budgets, made by the first ``for_key``; under a lock, so that the first
        calls of two threads share one table."""
        rare = self._own()
        with _making_own:
            keys = rare.keys
            if isinstance(keys, tuple):
                now = time.monotonic if rare.clock is None else rare.clock.now
                keys = rare.keys = Keys(*keys, now)
            return keys

    def remove_endpoint(self, name: str) -> TokenBucket | None:
        """Drops the bucket of endpoint ``name`` and returns it (None if there was none):
        calls naming it draw on the default bucket again. A shared file or Redis key
        stays: the budget is found again when the endpoint is added anew."""
        bucket = super().remove_endpoint(name)
        if self._rare.observer is not None:
            self._rare.observer.forget()
        return bucket

    # --- issue 8: pause and sync (per budget, not per call) --------------------------------

    def _made_buckets(self) -> list[TokenBucket]:
        """The default bucket and those of the endpoints used so far (the others are
        paused and resumed as one: ``_pause_unused``)."""
        endpoints = self._endpoint_buckets_to_read().values()
        return [self.default_bucket, *(bucket for bucket in endpoints if not bucket.blank)]

    def pause(self, seconds: float) -> None:
        """Refuses every acquire, ``priority="high"`` included, for ``seconds`` (e.g. a
        429's Retry-After), in every process sharing the budget; endpoints added meanwhile
        are paused too. A shorter pause never shortens a longer one."""
        for bucket in self._made_buckets():
            bucket.pause(seconds)
        self._pause_unused(seconds)
        if seconds:
            logger.warning("rate limiter %r paused for %ss", self.name, seconds)

    def resume(self) -> None:
        """Lifts a pause at once."""
        for bucket in self._made_buckets():
            bucket.resume()
        self._resume_unused()

    @property
    def paused_for(self) -> float:
        """Seconds the pause still lasts (0.0: not paused)."""
        made = max(bucket.paused_for for bucket in self._made_buckets())
        unused = any(b.blank for b in self._endpoint_buckets_to_read().values())
        return max(made, self._unused_paused_for) if unused else made

    def sync(
        self, used: int, window: str | int | None = None, *, endpoint: str | None = None
    ) -> None:
        """Makes exactly ``used`` tokens count as spent now in ``window`` (its name such as
        ``"60s"``/``"1m"``, or its index; may be omitted when the budget has one window),
        e.g. from the exchange's used-weight header: the exchange stays the authority."""
        bucket = self.bucket_for(endpoint)
        index = window_index(bucket.window_labels, [w[1] for w in bucket.windows], window)
        bucket.sync(used, index)

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.monotonic()

    def acquire_blocking(
        self,
        endpoint: str | None = None,
        *,
        cost: int = 1,
        timeout: float | None = None,
        priority: str | None = None,
    ) -> bool:
        """Waits (sleeping) until ``cost`` tokens are taken; False if that would take
        longer than ``timeout`` seconds (None: wait as long as it takes)."""
        sleep = self._clock.sleep if self._clock is not None else time.sleep
        deadline = None if timeout is None else self._now() + timeout
        while not self.acquire(endpoint, cost, priority=priority):
            wait = self.get_wait_time(endpoint, cost, priority=priority)
            if deadline is not None and self._now() + wait > deadline:
                logger.debug("rate limiter %r: no token within %ss", self.name, timeout)
                return False
            sleep(wait)
        return True

    async def acquire_async(
        self,
        endpoint: str | None = None,
        *,
        cost: int = 1,
        timeout: float | None = None,
        priority: str | None = None,
    ) -> bool:
        """``acquire_blocking`` for asyncio: awaits instead of blocking the loop (on Redis,
        each round trip is awaited on redis.asyncio, never blocking the loop). Waiters of a
        budget queue: high priority first, then first come, first served, each trying
        only when its tokens are due."""
        take = functools.partial(self.acquire, endpoint, cost, priority=priority)
        line = line_for(self.bucket_for(endpoint))
        # Nobody waiting: try at once; else behind those who came first.
        if line.empty() and await self._on_loop_or_off(take):
            return True
        due_in = functools.partial(
            self._on_loop_or_off, self.get_wait_time, endpoint, cost, priority=priority
        )

        async def attempt() -> Attempt[bool]:
            taken = await self._on_loop_or_off(take)
            return Attempt(taken, taken, 0.0 if taken else await due_in())

        waited = await line.take(
            attempt,
            due_in,
            high=priority == "high",
            max_wait=timeout,
            now=self._now,
            sleep=self._sleep_on_loop,
            real_time=self._clock is None,
        )
        if not waited.taken:
            logger.debug("rate limiter %r: no token within %ss", self.name, timeout)
        return waited.taken

    async def _sleep_on_loop(self, seconds: float) -> None:
        """Awaits ``seconds``: on the loop's timer, or advancing the test clock."""
        import asyncio  # here: a caller that never awaits need not import it

        if self._clock is not None:
            self._clock.advance(seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    async def _on_loop_or_off(self, step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``step(*args, **kwargs)``: at once in memory or in a shared file, its Redis
        command awaited on redis.asyncio when it waits for Redis (see ``on_loop``)."""
        if self.store is None:
            return step(*args, **kwargs)
        return await awaited.step(functools.partial(step, *args, **kwargs), (self.store.link,))

    def __repr__(self) -> str:
        bucket = self.default_bucket
        extra = ""
        if len(bucket.windows) > 1:
            extra += f", limits={bucket.window_labels!r}"
        if bucket.priority_reserve:
            extra += f", priority_reserve={bucket.priority_reserve}"
        return (
            f"RateLimiter(name={self.name!r}, max_requests={bucket.max_requests}, "
            f"window_seconds={bucket.window_seconds}, burst={bucket.capacity}{extra}, "
            f"backend={self.backend!r})"
        )

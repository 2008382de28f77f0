"""What an exchange's reply says about its budget, applied to a limiter (issue 13).

``RateLimiter.observe(status, headers, endpoint=None)`` reads a reply: a used-weight or
order-count header makes the matching window hold exactly what the exchange counted
(``sync``), a 429 or 418 (or a ``Retry-After`` on any refusal) stops every call for as
long as the exchange asks (``pause``). It only calls ``sync`` and ``pause``, so it works
on every backend, and whatever it cannot read it logs and skips: a reply never raises on
the order path.

Which headers count is a preset (``"binance"``, ``"generic"``, ``"auto"``: both) plus
any header named by the user. Names are matched case-insensitively. The header names to
look for are worked out once per bucket (and again each second, so that a config reload
that changes the windows is followed): the common reply costs a few dict lookups.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from peak_resilience._logging import limiter_log as logger
from peak_resilience._native import TokenBucket
from peak_resilience._windows import window_index

__all__ = [
    "PRESETS",
    "Observer",
    "ReplyHeaders",
    "reply_headers",
    "retry_after_seconds",
    "window_header_suffix",
]

#: The presets and the header families each one reads.
PRESETS: dict[str, tuple[str, ...]] = {
    "binance": ("binance",),
    "binance-spot": ("binance",),
    "binance-futures": ("binance",),
    "generic": ("generic",),
    "auto": ("binance", "generic"),
    "none": (),
}

#: Binance bans an IP that goes on after a 429 "from 2 minutes to 3 days": a 418 without
#: a Retry-After pauses for the shortest ban, each 418 in a row for twice as long.
BAN_MINIMUM = 120.0
BAN_MAXIMUM = 3 * 86400.0
#: The longest pause a reply's reset time may ask for (a mistaken epoch stays bounded).
RESET_MAXIMUM = 86400.0
#: How often a header that cannot be read is logged, per header name.
COMPLAINT_INTERVAL = 60.0
#: How long a bucket's list of headers is trusted before it is worked out again.
PLAN_LIFETIME = 1.0

#: Endpoints whose headers are kept worked out at once.
MAX_PLANS = 1024

#: Header text -> count, for the counts seen lately: a dict lookup is a third of what
#: int() of the text costs, and a reply's budget reads three of them.
_COUNTS: dict[Any, int] = {}
_MAX_COUNTS = 16384

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
# Mappings whose get() ignores case already (requests, aiohttp/multidict, httpx, the
# standard library's HTTPMessage, urllib3, werkzeug, starlette): no scan is needed.
_CASE_INSENSITIVE_MODULES = (
    "requests",
    "multidict",
    "httpx",
    "http.client",
    "email",
    "urllib3",
    "werkzeug",
    "starlette",
    "aiohttp",
)


class _Pausable(Protocol):
    """A limiter or one of its buckets."""

    def pause(self, seconds: float) -> None: ...
    @property
    def paused_for(self) -> float: ...


class _Limiter(Protocol):
    """What the observer uses of a limiter."""

    @property
    def name(self) -> str: ...
    def bucket_for(self, endpoint: str | None = None) -> TokenBucket: ...
    def endpoint_buckets(self) -> dict[str, TokenBucket]: ...
    def pause(self, seconds: float) -> None: ...
    @property
    def paused_for(self) -> float: ...


def window_header_suffix(seconds: float) -> str | None:
    """How an exchange names a window of ``seconds`` in a header: ``"1m"``, ``"10s"``,
    ``"1d"`` (the largest unit that divides it); None for a fraction of a second."""
    if seconds <= 0 or seconds != int(seconds):
        return None
    whole = int(seconds)
    for unit, length in _UNITS:
        if whole % length == 0:
            return f"{whole // length}{unit}"
    return None  # unreachable: every whole number of seconds divides by 1


def retry_after_seconds(value: str, now: float | None = None) -> float:
    """A ``Retry-After`` value in seconds from now: a number of seconds, or an HTTP date
    (a date in the past is 0). ValueError when it is neither."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"Retry-After {value!r} is neither seconds nor an HTTP date") from None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"Retry-After {value!r} is not a non-negative number of seconds")
    return seconds


def _count(value: Any) -> int:
    """``int(value)``, remembered (while fewer than ``_MAX_COUNTS`` are)."""
    used = int(value)
    if len(_COUNTS) < _MAX_COUNTS:
        _COUNTS[value] = used
    return used


def _number(value: Any) -> float:
    """The first number of a header value: ``"12"``, ``"100, 100;w=60"`` -> 100."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value).split(",", 1)[0].split(";", 1)[0].strip()
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _reset_seconds(value: Any) -> float:
    """A reset header in seconds from now: a delta in seconds, or (as some exchanges
    send) a Unix time in seconds or milliseconds."""
    number = _number(value)
    if number > 1e12:  # Unix milliseconds
        number = number / 1000.0 - time.time()
    elif number > 1e9:  # Unix seconds
        number -= time.time()
    return max(0.0, number)


@dataclass(frozen=True)
class ReplyHeaders:
    """Which headers of a reply ``observe`` reads.

    ``preset``: ``"binance"`` (also ``"binance-spot"``, ``"binance-futures"``: the same
    headers) reads ``X-MBX-USED-WEIGHT-<n><u>`` into the window of that length of the
    observed budget and ``X-MBX-ORDER-COUNT-<n><u>`` into the window of that length of
    the ``orders_endpoint`` budget (of the observed budget when there is no such
    endpoint); ``"generic"`` reads ``RateLimit-Limit/-Remaining/-Reset`` and
    ``X-RateLimit-Limit/-Remaining/-Used/-Reset``; ``"auto"`` (the default) both;
    ``"none"`` neither. ``used`` names more headers: header name -> window (``"1m"``,
    ``"60s"`` or its index) or (endpoint, window); each header's value is the used count.
    ``retry_after`` is how long a 429 without a ``Retry-After`` pauses the limiter.
    """

    preset: str = "auto"
    used: Mapping[str, str | int | tuple[str | None, str | int]] = field(default_factory=dict)
    orders_endpoint: str | None = "orders"
    retry_after: float = 1.0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(
                f"reply header preset {self.preset!r} is not one of {', '.join(PRESETS)}"
            )
        if not isinstance(self.used, Mapping):
            raise TypeError(f"used must map header names to windows, got {self.used!r}")
        for name in self.used:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a header name must be a non-empty str, got {name!r}")
        if (
            isinstance(self.retry_after, bool)
            or not isinstance(self.retry_after, (int, float))
            or not math.isfinite(self.retry_after)
            or self.retry_after < 0
        ):
            raise ValueError(
                f"retry_after must be a non-negative number of seconds, got {self.retry_after!r}"
            )


@dataclass(frozen=True)
class _Plan:
    """The headers to look for on replies about one bucket."""

    #: (header name, bucket, window index): the header's value is the count used. The
    #: name is in lower case, or as a plain dict of the server's replies spells it.
    used: tuple[tuple[str, TokenBucket, int], ...]
    #: (prefix, bucket, {max_requests: window index}, only window or None) per generic
    #: family ("ratelimit-", "x-ratelimit-").
    generic: tuple[tuple[str, TokenBucket, dict[int, int], int | None], ...]
    expires: float


class Observer:
    """Applies replies to one limiter as ``ReplyHeaders`` say (one per limiter)."""

    def __init__(self, headers: ReplyHeaders) -> None:
        self.headers = headers
        self._families = PRESETS[headers.preset]
        self._plans: dict[str | None, _Plan] = {}
        #: 418s in a row (a reply below 400 starts the count again).
        self.bans_in_a_row = 0
        self._complained: dict[str, float] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Works the headers out again on the next reply (the buckets changed)."""
        self._plans = {}

    # -- the reply ----------------------------------------------------------------------

    def observe(
        self,
        limiter: _Limiter,
        status: int,
        headers: Any,
        endpoint: str | None,
        pause_endpoint_only: bool = False,
    ) -> None:
        """Applies one reply; never raises (what it cannot read is logged). A refusal
        pauses the whole limiter, or with ``pause_endpoint_only`` the endpoint's bucket
        (a per-key budget: one key's 429 stops that key)."""
        # One frame for the common reply (a few used counts, status 2xx): each call saved
        # here is a tenth of the microsecond a reply may cost.
        try:
            plan = self._plans.get(endpoint)
            if plan is None or plan.expires <= time.monotonic():
                plan = self._plan(limiter, endpoint)
            get = headers.get
            found = False
            counts = _COUNTS
            for name, target, index in plan.used:
                value = get(name)
                if value is not None:
                    found = True
                    try:
                        used = counts.get(value)
                        if used is None:
                            used = _count(value)
                        target.sync(used, index)
                    except (TypeError, ValueError):
                        self._used_otherwise(limiter, name, value, target, index)
            if plan.generic:
                found |= self._apply_generic(limiter, plan, get)
            if not found and _needs_scan(headers):
                self._scan(limiter, plan, headers, endpoint)
            if status >= 400:
                paused = limiter.bucket_for(endpoint) if pause_endpoint_only else limiter
                self._refused(limiter, paused, status, headers)
            elif self.bans_in_a_row:
                self.bans_in_a_row = 0
        except Exception as exc:  # the order path must go on whatever a reply holds
            self._complain("reply", f"reply not applied ({type(exc).__name__}: {exc})", limiter)

    def _scan(self, limiter: _Limiter, plan: _Plan, headers: Any, endpoint: str | None) -> None:
        """Reads a plain dict spelled otherwise than the plan looks up (``"X-MBX-..."``),
        whatever the case, and makes the plan look up the spellings it found first: the
        next reply from the same server is a few lookups again."""
        spelled = {str(k).lower(): k for k in headers}
        learned = []
        for name, target, index in plan.used:
            original = spelled.get(name.lower())
            if original is not None:
                self._used_otherwise(limiter, name, headers[original], target, index)
                name = original
            learned.append((name, target, index))
        if plan.generic:
            lowered = {lower: headers[k] for lower, k in spelled.items()}
            self._apply_generic(limiter, plan, lowered.get)
        plans = dict(self._plans)
        plans[endpoint] = dataclasses.replace(plan, used=tuple(learned))
        self._plans = plans

    def _used_otherwise(
        self, limiter: _Limiter, name: str, value: Any, bucket: TokenBucket, index: int
    ) -> None:
        """A used count that is not a plain int's text (``"12.0"``, bytes), or nothing
        a count can be read from (logged)."""
        try:
            used = int(_number(value))
        except (TypeError, ValueError):
            self._complain(name, f"header {name}: {value!r} is not a count", limiter)
            return
        if used < 0:
            self._complain(name, f"header {name}: {value!r} is negative", limiter)
            return
        bucket.sync(used, index)

    def _apply_generic(self, limiter: _Limiter, plan: _Plan, get: Any) -> bool:
        found = False
        for prefix, bucket, by_limit, only in plan.generic:
            remaining = get(prefix + "remaining")
            used_value = get(prefix + "used")
            if remaining is None and used_value is None:
                continue
            found = True
            try:
                limit_value = get(prefix + "limit")
                limit = None if limit_value is None else int(_number(limit_value))
                index = by_limit.get(limit, only) if limit is not None else only
                if index is None:
                    self._complain(
                        prefix,
                        f"{prefix}limit {limit_value!r} matches no window of the budget",
                        limiter,
                    )
                    continue
                if used_value is not None:
                    used = int(_number(used_value))
                else:
                    if limit is None:
                        limit = bucket.windows[index][0]
                    used = max(0, limit - int(_number(remaining)))
                bucket.sync(max(0, used), index)
                reset = get(prefix + "reset")
                if remaining is not None and int(_number(remaining)) <= 0 and reset is not None:
                    seconds = _reset_seconds(reset)
                    if 0 < seconds <= RESET_MAXIMUM:
                        limiter.pause(seconds)
            except (TypeError, ValueError, IndexError) as exc:
                self._complain(prefix, f"{prefix}* headers not read: {exc}", limiter)
        return found

    def _refused(self, limiter: _Limiter, paused: _Pausable, status: int, headers: Any) -> None:
        """A 429, a 418 or another refusal with a ``Retry-After``: pause."""
        value = _get_any(headers, "retry-after")
        retry_after = None
        if value is not None:
            try:
                retry_after = retry_after_seconds(
                    value.decode("latin-1") if isinstance(value, bytes) else str(value)
                )
            except ValueError as exc:
                self._complain("retry-after", str(exc), limiter)
        if status == 418:
            with self._lock:
                self.bans_in_a_row += 1
                escalated = BAN_MINIMUM * 2.0 ** min(self.bans_in_a_row - 1, 32)
            seconds = min(BAN_MAXIMUM, max(retry_after or 0.0, escalated))
        elif status == 429:
            seconds = self.headers.retry_after if retry_after is None else retry_after
        elif retry_after is not None:
            seconds = retry_after
        else:
            return
        # A pause as long is already running (the replies of calls sent before it): no
        # second log line or round trip to the store.
        if seconds > 0 and paused.paused_for < seconds - 0.5:
            paused.pause(seconds)

    # -- which headers, for which bucket ------------------------------------------------

    def _plan(self, limiter: _Limiter, endpoint: str | None) -> _Plan:
        bucket = limiter.bucket_for(endpoint)
        used: list[tuple[str, TokenBucket, int]] = []
        generic: list[tuple[str, TokenBucket, dict[int, int], int | None]] = []
        if "binance" in self._families:
            used += _window_headers("x-mbx-used-weight-", bucket)
            orders = None
            if self.headers.orders_endpoint is not None:
                orders = limiter.endpoint_buckets().get(self.headers.orders_endpoint)
            used += _window_headers("x-mbx-order-count-", bucket if orders is None else orders)
        if "generic" in self._families:
            windows = bucket.windows
            by_limit = {requests: i for i, (requests, _, _) in reversed(list(enumerate(windows)))}
            only = 0 if len(windows) == 1 else None
            generic = [(p, bucket, by_limit, only) for p in ("ratelimit-", "x-ratelimit-")]
        for name, target in self.headers.used.items():
            endpoint, window = target if isinstance(target, tuple) else (None, target)
            named = bucket if endpoint is None else limiter.bucket_for(endpoint)
            try:
                index = window_index(named.window_labels, [w[1] for w in named.windows], window)
            except (TypeError, ValueError) as exc:
                self._complain(name, f"header {name} names no window: {exc}", limiter)
                continue
            used.append((name.lower(), named, index))
        plan = _Plan(tuple(used), tuple(generic), time.monotonic() + PLAN_LIFETIME)
        # Copied, not changed in place: a reply on another thread reads the old dict.
        # Bounded: the plans of endpoints no longer observed go at the next copy.
        plans = dict(self._plans) if len(self._plans) < MAX_PLANS else {}
        plans[endpoint] = plan
        self._plans = plans
        return plan

    # -- logging, rate limited -----------------------------------------------------------

    def _complain(self, key: str, message: str, limiter: _Limiter) -> None:
        """Logs ``message`` at most once a minute per header: a reply in every call
        must not flood the log."""
        now = time.monotonic()
        with self._lock:
            last = self._complained.get(key)
            if last is not None and now - last < COMPLAINT_INTERVAL:
                return
            self._complained[key] = now
        logger.warning("rate limiter %r: %s (ignored)", limiter.name, message)


def _window_headers(prefix: str, bucket: TokenBucket) -> list[tuple[str, TokenBucket, int]]:
    """``prefix + "1m"`` etc. for each window of ``bucket`` with a whole length."""
    found = []
    for index, (_, seconds, _) in enumerate(bucket.windows):
        suffix = window_header_suffix(seconds)
        if suffix is not None:
            found.append((prefix + suffix, bucket, index))
    return found


_scanned_types: dict[type, bool] = {dict: True}


def _needs_scan(headers: Any) -> bool:
    """Whether ``headers`` may hold a name in another case than asked for (a plain dict
    or an unknown mapping), rather than ignoring case itself."""
    kind = type(headers)
    scan = _scanned_types.get(kind)
    if scan is None:
        module = kind.__module__
        scan = not module.startswith(_CASE_INSENSITIVE_MODULES) and hasattr(headers, "items")
        _scanned_types[kind] = scan
    return scan


def _get_any(headers: Any, name: str) -> Any:
    """``headers[name]`` whatever the case (the rare path: refusals)."""
    value = headers.get(name)
    if value is None and _needs_scan(headers):
        for key, candidate in headers.items():
            if str(key).lower() == name:
                return candidate
    return value


def reply_headers(
    preset: str | ReplyHeaders = "auto",
    *,
    used: Mapping[str, str | int | tuple[str | None, str | int]] | None = None,
    orders_endpoint: str | None = "orders",
    retry_after: float = 1.0,
) -> ReplyHeaders:
    """A ``ReplyHeaders`` from the keywords of ``RateLimiter.set_reply_headers``."""
    if isinstance(preset, ReplyHeaders):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a preset's name, got {preset!r}")
    return ReplyHeaders(preset, dict(used or {}), orders_endpoint, retry_after)

"""What a module's breakers and limiter are built with: the one translation from
``Settings`` to the objects' parameters.

Construction, reload, ``config show`` and ``config validate`` all read these, so what
is shown and what is checked is what runs. ``Placement`` is the part an object cannot
change in place (where its state lives): a reload that changes it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peak_resilience._config.schema import Settings
from peak_resilience._native import TokenBucket
from peak_resilience._windows import Kind, Limit, native_kinds, parse_limits

__all__ = [
    "BreakerParameters",
    "LimiterParameters",
    "Placement",
    "Window",
    "breaker_parameters",
    "limiter_parameters",
]


@dataclass(frozen=True)
class Window:
    """One window of a rate budget: ``requests`` per ``seconds``, ``burst`` tokens full,
    counted as ``kind`` says ("bucket", "fixed" or "sliding")."""

    requests: int
    seconds: float
    burst: int
    kind: Kind = "bucket"

    def __str__(self) -> str:
        shown = f"{self.requests}/{self.seconds:g}s"
        if self.kind != "bucket":
            return f"{shown} {self.kind}"
        return shown if self.burst == self.requests else f"{shown} (burst {self.burst})"

    @property
    def limit(self) -> Limit:
        """The window as ``limits=`` takes it: a pair for a token bucket, else its text."""
        if self.kind == "bucket":
            return (self.requests, self.seconds)
        return f"{self.requests}/{self.seconds!r}s {self.kind}"


@dataclass(frozen=True)
class Placement:
    """Where an object's state lives: fixed when it is built."""

    backend: str
    shared_dir: str
    redis_url: str | None
    on_backend_error: str

    def differences(self, other: Placement, backend_key: str) -> list[tuple[str, Any, Any]]:
        """(key, this value, other value) for each key that differs."""
        pairs = (
            (backend_key, self.backend, other.backend),
            ("shared_dir", self.shared_dir, other.shared_dir),
            ("redis_url", self.redis_url, other.redis_url),
            ("on_backend_error", self.on_backend_error, other.on_backend_error),
        )
        relevant = {backend_key, "on_backend_error"}
        if "shared" in (self.backend, other.backend):
            relevant.add("shared_dir")
        if "redis" in (self.backend, other.backend):
            relevant.add("redis_url")
        return [(k, a, b) for k, a, b in pairs if k in relevant and a != b]


@dataclass(frozen=True)
class LimiterParameters:
    """A module limiter's budget: every window (the first one's burst may differ from
    its request count), the tokens kept for priority calls, and the switch."""

    windows: tuple[Window, ...]
    reserve: int
    enabled: bool
    placement: Placement

    @property
    def first(self) -> Window:
        return self.windows[0]

    @property
    def others(self) -> list[tuple[int, float]]:
        """The windows after the first, as (max_requests, window_seconds)."""
        return [(w.requests, w.seconds) for w in self.windows[1:]]

    @property
    def limits(self) -> list[Limit]:
        """Every window as ``RateLimiter(limits=...)`` takes it, kinds included."""
        return [w.limit for w in self.windows]

    @property
    def kinds(self) -> list[str]:
        """How each window counts, as ``TokenBucket.window_kinds`` reports it."""
        return [w.kind for w in self.windows]

    @property
    def native_windows(self) -> list[tuple[int, float, int]]:
        """The windows as a native bucket reports them (``TokenBucket.windows``)."""
        return [(w.requests, w.seconds, w.burst) for w in self.windows]

    def set_on(self, bucket: TokenBucket) -> None:
        """Gives ``bucket`` this budget in place (tokens already spent stay spent)."""
        first = self.first
        bucket.set_windows(
            first.requests,
            first.seconds,
            first.burst,
            windows=self.others,
            kinds=native_kinds([w.kind for w in self.windows]),
            priority_reserve=self.reserve,
        )

    def describe(self) -> str:
        """The budget in a line: ``"30/60s"``, ``"1200/60s + 50/10s"``."""
        shown = " + ".join(str(w) for w in self.windows)
        if self.reserve:
            shown += f", {self.reserve} kept for priority calls"
        return shown if self.enabled else f"{shown} (disabled: every call passes)"


@dataclass(frozen=True)
class BreakerParameters:
    """A module breaker's thresholds, policy keywords and switches."""

    failure_threshold: int
    recovery_timeout: float
    half_open_max_calls: int
    policy: dict[str, Any]
    enabled: bool
    metrics_only: bool
    placement: Placement


def _placement(settings: Settings, backend: str) -> Placement:
    return Placement(
        backend, settings.shared_dir, settings.redis_location, settings.on_backend_error
    )


def limiter_parameters(settings: Settings) -> LimiterParameters:
    """The limiter a module with ``settings`` gets: ``rate_limits`` when they are in force
    (the loader clears them where a more specific layer set the pair instead), else
    ``rate_limit_requests`` per ``rate_limit_window`` with ``rate_limit_burst``."""
    if settings.rate_limits:
        windows = tuple(Window(n, s, n, kind) for n, s, kind in parse_limits(settings.rate_limits))
    else:
        pair = Window(settings.rate_limit_requests, settings.rate_limit_window, settings.burst)
        windows = (pair,)
    return LimiterParameters(
        windows,
        settings.rate_limit_reserve,
        settings.rate_limit_enabled,
        _placement(settings, settings.rate_limit_backend),
    )


def breaker_parameters(settings: Settings) -> BreakerParameters:
    """The breakers a module with ``settings`` gets."""
    return BreakerParameters(
        settings.circuit_breaker_threshold,
        settings.circuit_breaker_timeout,
        settings.half_open_max_calls,
        settings.breaker_policy,
        settings.circuit_breaker_enabled,
        settings.circuit_breaker_metrics_only,
        _placement(settings, settings.circuit_breaker_backend),
    )

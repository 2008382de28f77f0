"""The circuit breaker's Python face over the native state machine.

Every transition is logged, put in the metrics' event ring and told to the event
listeners (the breaker's own and the process-wide ones, see ``_events``); the native
breaker counts it for the state-changes family.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from peak_resilience import _instances
from peak_resilience._backends import choice
from peak_resilience._backends.place import place
from peak_resilience._circuit import CircuitState, WindowType
from peak_resilience._events import (
    NO_LISTENERS,
    BreakerTransition,
    Listener,
    Listeners,
    announce_refusal,
    everyone,
    watch_outages,
)
from peak_resilience._guard import guard, typed
from peak_resilience._logging import breaker_log as logger
from peak_resilience._logging import log_refusal
from peak_resilience._metrics.recorder import metrics
from peak_resilience._native import CircuitBreaker as _NativeBreaker
from peak_resilience._native import ManualClock

__all__ = ["CircuitBreaker", "CircuitState", "ExceptionClasses", "WindowType"]

P = ParamSpec("P")
R = TypeVar("R")

ExceptionClasses = type[BaseException] | tuple[type[BaseException], ...]


def _on_transition(name: str, from_code: int, to_code: int, own: Listeners | None = None) -> None:
    from_state, to_state = CircuitState(from_code), CircuitState(to_code)
    opened = to_state in (CircuitState.OPEN, CircuitState.FORCED_OPEN)
    level = logging.WARNING if opened else logging.INFO
    logger.log(level, "circuit breaker %r: %s -> %s", name, from_state.name, to_state.name)
    metrics._on_breaker_transition(name, from_state, to_state)
    if own or everyone:
        event = BreakerTransition(name, from_state, to_state)
        if own:
            own.tell(event)
        everyone.tell(event)


def _own_transitions(
    breaker: weakref.ReferenceType[CircuitBreaker],
) -> Callable[[str, int, int], None]:
    """The native listener of a breaker with listeners of its own. Weak: the native
    breaker holds its listener, which must not keep the breaker alive."""

    def on_transition(name: str, from_code: int, to_code: int) -> None:
        alive = breaker()
        _on_transition(name, from_code, to_code, None if alive is None else alive._listeners)

    return on_transition


class CircuitBreaker(_NativeBreaker):
    """Fails fast while a dependency keeps failing.

    CLOSED: ``failure_threshold`` consecutive failures open the circuit (a success resets
    the count). OPEN: calls raise ``CircuitBreakerError`` without running. After
    ``recovery_timeout`` seconds the circuit is HALF_OPEN and lets ``half_open_max_calls``
    trial calls through: if they all succeed it closes, if one fails it opens again. The
    function's own exception always reaches the caller unchanged; exceptions that are not
    ``Exception`` (KeyboardInterrupt, CancelledError, ...) count neither way.

    ``backend`` says where the state lives: ``"memory"`` (this process, the default),
    ``"shared"`` (a memory-mapped file in ``shared_dir``: a circuit opened by one process
    of the host is open in all that use the same ``name``) or ``"redis"`` (shared by every
    host, at ``redis_url``; ``on_backend_error`` and ``redis_timeout`` say what happens
    when Redis cannot be reached). The breaker is the same on every backend: the state
    machine's rules are the native one's, and the Redis store runs them as a script.
    ``clock=`` on Redis is for tests: the scripts then read the manual clock instead of
    Redis' own.

    Trader-grade policies, each off unless given:

    - ``failure_rate_threshold`` (a fraction, 0.5 = half the calls) opens the circuit
      when that share of the calls in the window failed, once the window holds
      ``minimum_calls`` (default 10); beside ``failure_threshold``, which still opens it
      on a streak. ``window_type="count"`` measures the last ``window_size`` calls
      (default 100), ``"time"`` the last ``window_size`` seconds (default 60), each in ten
      slices: the oldest slice drops out whole. The window starts empty whenever the
      circuit closes.
    - ``slow_call_duration`` seconds: a successful call that took at least this long
      counts as a failure (in the streak and in the rate) and in ``slow_call_total``.
    - ``record_exceptions``: only these exception classes count as failures; any other
      exception counts as a success. ``ignore_exceptions``: these count neither way (a
      half-open trial gives its permit back). ``failure_result(value)``: a returned value
      for which it answers true counts as a failure (the value is still returned).
    - ``backoff_multiplier``: each half-open trial that fails in a row reopens the
      circuit for ``recovery_timeout * backoff_multiplier ** n`` seconds, at most
      ``max_recovery_timeout`` (default 600 s); closing forgets the count.
    - ``open_for(seconds)`` opens it for exactly that long (an exchange's Retry-After);
      ``force_open()`` holds it open and ``disable()`` lets everything through (still
      counting), both until ``reset()``; ``metrics_only=True`` (or
      ``set_metrics_only(True)``) lets every call run while the state machine keeps
      deciding: ``state`` reads METRICS_ONLY, ``shadow_state`` what it would be, and
      ``would_reject_total`` counts the calls it would have refused.
    """

    # No instance dict, and no listeners until one is added: a process may hold 100,000
    # breakers (one per symbol), each a few hundred bytes (issue 19).
    __slots__ = ("_keeps_counts", "_listeners")

    _listeners: Listeners

    def __new__(
        cls,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        name: str | None = None,
        half_open_max_calls: int = 1,
        *,
        clock: ManualClock | None = None,
        backend: choice.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: choice.OnBackendError = "local",
        redis_timeout: float = choice.DEFAULT_REDIS_TIMEOUT,
        failure_rate_threshold: float | None = None,
        minimum_calls: int | None = None,
        window_type: WindowType | None = None,
        window_size: float | None = None,
        slow_call_duration: float | None = None,
        backoff_multiplier: float | None = None,
        max_recovery_timeout: float | None = None,
        record_exceptions: ExceptionClasses | None = None,
        ignore_exceptions: ExceptionClasses | None = None,
        failure_result: Callable[[Any], object] | None = None,
        metrics_only: bool = False,
    ) -> CircuitBreaker:
        where = place(
            "breaker",
            backend,
            name,
            shared_dir=shared_dir,
            redis_url=redis_url,
            redis_timeout=redis_timeout,
            on_backend_error=on_backend_error,
            clock=clock,
        )
        instance = super().__new__(
            cls,
            failure_threshold,
            recovery_timeout,
            name,
            half_open_max_calls,
            clock=clock,
            failure_rate_threshold=failure_rate_threshold,
            minimum_calls=minimum_calls,
            window_type=window_type,
            window_size=window_size,
            slow_call_duration=slow_call_duration,
            backoff_multiplier=backoff_multiplier,
            max_recovery_timeout=max_recovery_timeout,
            record_exceptions=record_exceptions,
            ignore_exceptions=ignore_exceptions,
            failure_result=failure_result,
            metrics_only=metrics_only,
            **where.keywords(on_backend_error),
        )
        return cast("CircuitBreaker", instance)

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        name: str | None = None,
        half_open_max_calls: int = 1,
        *,
        clock: ManualClock | None = None,
        backend: choice.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: choice.OnBackendError = "local",
        redis_timeout: float = choice.DEFAULT_REDIS_TIMEOUT,
        failure_rate_threshold: float | None = None,
        minimum_calls: int | None = None,
        window_type: WindowType | None = None,
        window_size: float | None = None,
        slow_call_duration: float | None = None,
        backoff_multiplier: float | None = None,
        max_recovery_timeout: float | None = None,
        record_exceptions: ExceptionClasses | None = None,
        ignore_exceptions: ExceptionClasses | None = None,
        failure_result: Callable[[Any], object] | None = None,
        metrics_only: bool = False,
    ) -> None:
        # The native constructor has validated and stored everything, and put the state
        # where the backend says (a shared file mapped, a Redis store attached).
        self._listeners = NO_LISTENERS
        self.set_listener(_on_transition)
        watch_outages(self, "breaker")
        _instances.breakers.add(self)
        # An unnamed one has a name of its own ("...-<n>") that nothing else shares or
        # re-creates: its series may simply go with it.
        self._keeps_counts = name is not None

    def __del__(self) -> None:
        # It leaves the live objects here, before a reference cycle it may be in is
        # cleared, and what it counted stays counted under its name (see _instances). At
        # interpreter exit the module may be gone: nothing is left to export then.
        with contextlib.suppress(Exception):
            if getattr(self, "_keeps_counts", False):
                _instances.retire_breaker(self)
            else:
                _instances.breakers.discard(self)

    @property
    def backend(self) -> choice.Backend:
        """Where the state lives: ``"memory"``, ``"shared"`` or ``"redis"``."""
        if self.store is not None:
            return "redis"
        return "memory" if self.shared_path is None else "shared"

    def add_listener(self, listener: Listener) -> None:
        """Calls ``listener(event)`` on each of this breaker's events: every
        ``BreakerTransition``, every ``CallRefused`` of a call it guards (through
        ``call`` or ``with_resilience``) and its Redis' ``BackendOutage``. A listener
        that raises is logged and skipped, never reaching the call."""
        if not self._listeners:
            if self._listeners is NO_LISTENERS:
                self._listeners = Listeners()
            self.set_listener(_own_transitions(weakref.ref(self)))
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stops telling ``listener``; ValueError if it was not listening."""
        self._listeners.remove(listener)
        if not self._listeners:
            self.set_listener(_on_transition)

    def _refused(self, refusal: BaseException) -> None:
        log_refusal(logger, self.name, "call refused: %s", refusal)
        announce_refusal(refusal, self._listeners)

    @property
    def redis_available(self) -> bool:
        """False while the Redis store cannot be reached (``on_backend_error`` applies
        meanwhile); True for a breaker on any other backend."""
        store = self.store
        return True if store is None else bool(store.available)

    @property
    def state(self) -> CircuitState:
        """The current state; an open circuit past its recovery timeout reads HALF_OPEN."""
        return CircuitState(self.state_code)

    @property
    def shadow_state(self) -> CircuitState:
        """The state machine's own state: under METRICS_ONLY, what an enforcing breaker
        would be in (CLOSED, HALF_OPEN or OPEN); otherwise the same as ``state``."""
        return CircuitState(self.shadow_state_code)

    def call(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorates a sync or async function (or method) with this breaker."""
        return typed(guard(func, breaker=self, on_reject=self._refused), func)

    def get_stats(self) -> dict[str, Any]:
        """Counters since creation: calls that succeeded, failed and were rejected."""
        return {
            "name": self.name,
            "state": self.state.name,
            "failure_count": self.failure_count,
            "successes": self.success_total,
            "failures": self.failure_total,
            "rejections": self.rejection_total,
            "retry_after": self.retry_after,
            "shadow_state": self.shadow_state.name,
            "slow_calls": self.slow_call_total,
            "would_reject": self.would_reject_total,
            "failure_rate": self.failure_rate,
            "failed_trials": self.failed_trials,
        }

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self.state.name}, "
            f"failure_threshold={self.failure_threshold}, "
            f"recovery_timeout={self.recovery_timeout}, backend={self.backend!r})"
        )

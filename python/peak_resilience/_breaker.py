"""The circuit breaker's Python face over the native state machine."""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from peak_resilience import _backends, _instances, _shared
from peak_resilience._guard import guard, typed
from peak_resilience._logging import breaker_log as logger
from peak_resilience._native import CircuitBreaker as _NativeBreaker

if TYPE_CHECKING:
    from peak_resilience.testing import ManualClock

P = ParamSpec("P")
R = TypeVar("R")

#: Called as hook(name, from_state, to_state) after every transition of every breaker.
transition_hooks: list[Callable[[str, CircuitState, CircuitState], None]] = []


class CircuitState(enum.IntEnum):
    """A breaker's state; the values are those of the ``..._circuit_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    def __str__(self) -> str:
        # Logs and messages read "OPEN", not the gauge value "2".
        return self.name


def _on_transition(name: str, from_code: int, to_code: int) -> None:
    from_state, to_state = CircuitState(from_code), CircuitState(to_code)
    level = logging.WARNING if to_state is CircuitState.OPEN else logging.INFO
    logger.log(level, "circuit breaker %r: %s -> %s", name, from_state.name, to_state.name)
    for hook in list(transition_hooks):
        hook(name, from_state, to_state)


def _log_rejection(refusal: BaseException) -> None:
    logger.debug("call refused: %s", refusal)


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
    when Redis cannot be reached).
    """

    backend: _backends.Backend = "memory"

    def __new__(
        cls,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        name: str | None = None,
        half_open_max_calls: int = 1,
        *,
        clock: ManualClock | None = None,
        backend: _backends.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: _backends.OnBackendError = "local",
        redis_timeout: float = _backends.DEFAULT_REDIS_TIMEOUT,
    ) -> CircuitBreaker:
        backend = _backends.check_backend(backend)
        shared = None
        if backend == "shared":
            shared = _shared.breaker_file(name, shared_dir)
        elif backend == "redis":
            from peak_resilience._redis_breaker import RedisCircuitBreaker

            if not issubclass(cls, RedisCircuitBreaker):
                # Python then runs RedisCircuitBreaker.__init__ on the object returned.
                cls = RedisCircuitBreaker
        instance = super().__new__(
            cls,
            failure_threshold,
            recovery_timeout,
            name,
            half_open_max_calls,
            clock=clock,
            shared=shared,
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
        backend: _backends.Backend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: _backends.OnBackendError = "local",
        redis_timeout: float = _backends.DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        # The native constructor has validated and stored everything (and mapped the
        # shared file); the Redis subclass checks its own arguments.
        self.backend = backend
        self.set_listener(_on_transition)
        _instances.breakers.add(self)

    @property
    def state(self) -> CircuitState:
        """The current state; an open circuit past its recovery timeout reads HALF_OPEN."""
        return CircuitState(self.state_code)

    def call(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorates a sync or async function (or method) with this breaker."""
        return typed(guard(func, breaker=self, on_reject=_log_rejection), func)

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
        }

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self.state.name}, "
            f"failure_threshold={self.failure_threshold}, "
            f"recovery_timeout={self.recovery_timeout}, backend={self.backend!r})"
        )

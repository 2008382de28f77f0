"""Events: what a breaker or a limiter tells its listeners, and the process-wide ones.

Three kinds, each a small frozen record: ``BreakerTransition`` (every state change of a
breaker), ``CallRefused`` (a guarded call refused by an open circuit or an empty budget)
and ``BackendOutage`` (a breaker's or limiter's Redis became unreachable, or came back).

A listener is any callable taking the event. One that raises is logged (with its
traceback, under ``peak_resilience.events``) and skipped: it never reaches the call that
triggered the event, nor stops the listeners after it. Unused, events cost nothing: a
breaker installs its native transition listener only once someone listens, and the
native guards hand refusals to Python only while a refusal listener (or the DEBUG log)
wants them.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from peak_resilience import _logging
from peak_resilience._circuit import CircuitState
from peak_resilience._fork import after_fork_in_child
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded

__all__ = [
    "NO_LISTENERS",
    "BackendOutage",
    "BreakerTransition",
    "CallRefused",
    "Event",
    "Listener",
    "Listeners",
    "add_listener",
    "announce_refusal",
    "everyone",
    "refusal_event",
    "remove_listener",
    "watch_outages",
]

logger = logging.getLogger("peak_resilience.events")


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """Breaker ``breaker`` went from ``from_state`` to ``to_state``."""

    breaker: str
    from_state: CircuitState
    to_state: CircuitState
    #: Unix time of the event (``time.time()``).
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class CallRefused:
    """A guarded call was not attempted: ``reason`` "circuit_open" (breaker ``name``) or
    "rate_limited" (limiter ``name``, its ``endpoint`` or None for the default bucket)."""

    reason: Literal["circuit_open", "rate_limited"]
    name: str
    retry_after: float
    endpoint: str | None = None
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class BackendOutage:
    """The ``backend`` ("redis") of breaker or limiter ``name`` became unreachable
    (``available`` False, with the ``error``) or reachable again (True)."""

    backend: str
    kind: Literal["breaker", "limiter"]
    name: str
    available: bool
    error: str | None = None
    timestamp: float = field(default_factory=time.time)


Event: TypeAlias = BreakerTransition | CallRefused | BackendOutage
Listener: TypeAlias = Callable[[Event], object]

#: The Listeners that hold at least one listener, by id: weakly, so that a breaker
#: dropped with its listeners still attached stops wanting refusals.
_wanting: dict[int, weakref.ReferenceType[Listeners]] = {}
# Re-entrant: a Listeners may die (and be forgotten) while its owner's thread holds it.
_wanting_lock = threading.RLock()


def _wanted(listeners: Listeners, wanted: bool) -> None:
    key = id(listeners)
    with _wanting_lock:
        if wanted:
            _wanting[key] = weakref.ref(listeners, lambda _: _forget(key))
        else:
            _wanting.pop(key, None)
        _logging.set_refusals_wanted(bool(_wanting))


def _after_fork_in_child() -> None:
    global _wanting_lock
    _wanting_lock = threading.RLock()


after_fork_in_child(_after_fork_in_child)


def _forget(key: int) -> None:
    with _wanting_lock:
        _wanting.pop(key, None)
        _logging.set_refusals_wanted(bool(_wanting))


class Listeners:
    """The listeners of one breaker or limiter, or of the whole process."""

    __slots__ = ("__weakref__", "_listeners")

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()

    def add(self, listener: Listener) -> None:
        if not callable(listener):
            raise TypeError(f"a listener must be callable, got {listener!r}")
        self._listeners = (*self._listeners, listener)  # a new tuple: tell() never locks
        _wanted(self, True)

    def remove(self, listener: Listener) -> None:
        listeners = list(self._listeners)
        try:
            listeners.remove(listener)
        except ValueError:
            raise ValueError(f"{listener!r} is not listening") from None
        self._listeners = tuple(listeners)
        if not listeners:
            _wanted(self, False)

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def tell(self, event: Event) -> None:
        """Tells each listener; a listener that raises is logged and skipped."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                # The traceback as text: a kept log record must not keep the frames (and
                # through them the breaker or limiter) alive.
                logger.error(
                    "event listener %r raised on %r:\n%s", listener, event, traceback.format_exc()
                )


#: The process-wide listeners: told of every breaker's and limiter's events.
everyone = Listeners()
#: The listeners of an object that has none yet, shared (never added to): its own are
#: made by its first ``add_listener``.
NO_LISTENERS = Listeners()


def add_listener(listener: Listener) -> None:
    """Calls ``listener(event)`` on every event of every breaker and limiter of the
    process: ``BreakerTransition``, ``CallRefused`` and ``BackendOutage``."""
    everyone.add(listener)


def remove_listener(listener: Listener) -> None:
    """Stops telling ``listener``; ValueError if it was not listening."""
    everyone.remove(listener)


def refusal_event(refusal: BaseException) -> CallRefused | None:
    """The event of a refused call (None for any other exception)."""
    if isinstance(refusal, CircuitBreakerError):
        return CallRefused("circuit_open", refusal.name, refusal.retry_after)
    if isinstance(refusal, RateLimitExceeded):
        return CallRefused("rate_limited", refusal.limiter, refusal.retry_after, refusal.endpoint)
    return None


def announce_refusal(refusal: BaseException, own: Listeners | None) -> None:
    """Tells ``own`` listeners (those of the breaker or limiter that refused) and the
    process-wide ones of a refused call; called by the guards' ``on_reject``."""
    if not _logging.refusals_wanted():  # no listener anywhere: the common case, cheaply
        return
    if not (own or everyone):
        return
    event = refusal_event(refusal)
    if event is not None:
        if own:
            own.tell(event)
        everyone.tell(event)


class _Listening(Protocol):
    """A breaker or limiter: its listeners, and its Redis store (None on other backends)."""

    _listeners: Listeners

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> Any: ...


def watch_outages(owner: _Listening, kind: Literal["breaker", "limiter"]) -> None:
    """Has ``owner``'s Redis link (if it has one) announce each outage and recovery.
    Weak: the link belongs to the owner and must not keep it alive."""
    link = getattr(owner.store, "link", None)
    if link is None:
        return
    ref = weakref.ref(owner)
    name, backend = owner.name, "redis"

    def on_change(available: bool, error: str | None) -> None:
        alive = ref()
        own = None if alive is None else alive._listeners
        if own or everyone:
            event = BackendOutage(backend, kind, name, available, error)
            if own:
                own.tell(event)
            everyone.tell(event)

    link.on_change = on_change

"""Being told what the breakers and limiters do: transitions, refusals, backend outages.

``add_listener(listener)`` for every breaker and limiter of the process;
``breaker.add_listener(listener)`` / ``limiter.add_listener(listener)`` for one. A
listener is called with a ``BreakerTransition``, ``CallRefused`` or ``BackendOutage``
(``Event``); one that raises is logged and skipped, never reaching the call.
"""

from __future__ import annotations

from peak_resilience._events import (
    BackendOutage,
    BreakerTransition,
    CallRefused,
    Event,
    Listener,
    add_listener,
    remove_listener,
)

__all__ = [
    "BackendOutage",
    "BreakerTransition",
    "CallRefused",
    "Event",
    "Listener",
    "add_listener",
    "remove_listener",
]

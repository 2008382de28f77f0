"""Helpers for testing code that uses peak-resilience without sleeping.

``ManualClock`` is accepted as ``clock=`` by ``RateLimiter`` and ``CircuitBreaker``;
``clock.advance(seconds)`` moves every object built on it at once, and ``clock.sleep`` can
stand in for ``time.sleep`` where a wait would otherwise block.

``fresh_resilience(clock)`` gives one test its own module registry (the breakers and
limiters of ``with_resilience`` and ``create_module_*``, built on ``clock``), fresh
operation stats and an unconfigured process, and puts the previous ones back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from peak_resilience import _instances
from peak_resilience._config import active
from peak_resilience._modules import registry
from peak_resilience._native import ManualClock

__all__ = ["ManualClock", "fresh_resilience"]


@contextmanager
def fresh_resilience(clock: ManualClock | None = None) -> Iterator[None]:
    """Within the block: no configuration loaded yet, no module breakers or limiters (the
    ones made inside run on ``clock``), no operation stats, retry budgets or timeout counts.
    Restored on exit."""
    previous_registry = registry._use_registry(registry.ModuleRegistry(clock))
    previous_config = active._swap(None)
    previous_operations, _instances.operations = _instances.operations, {}
    previous_retries, _instances.retries = _instances.retries, {}
    previous_timeouts, _instances.timeouts = _instances.timeouts, {}
    try:
        yield
    finally:
        _instances.operations = previous_operations
        _instances.retries = previous_retries
        _instances.timeouts = previous_timeouts
        active._swap(previous_config)
        registry._use_registry(previous_registry)

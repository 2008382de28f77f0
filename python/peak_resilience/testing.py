"""Helpers for testing code that uses peak-resilience without sleeping.

``ManualClock`` is accepted as ``clock=`` by ``RateLimiter`` and ``CircuitBreaker``;
``clock.advance(seconds)`` moves every object built on it at once, and ``clock.sleep`` can
stand in for ``time.sleep`` where a wait would otherwise block.
"""

from peak_resilience._native import ManualClock

__all__ = ["ManualClock"]

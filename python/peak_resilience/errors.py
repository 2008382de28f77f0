"""The exceptions a guarded call raises instead of running.

Both are raised from the native core with their arguments already formatted, so building
one costs no Python-level ``__init__``: ``args`` is ``(message, ...details)`` and the
properties below read the details back.
"""

from __future__ import annotations

__all__ = ["CircuitBreakerError", "RateLimitExceeded", "ResilienceError"]


class ResilienceError(Exception):
    """Base class of the errors peak-resilience raises instead of running a call."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class CircuitBreakerError(ResilienceError):
    """The circuit is open (or its half-open trials are taken): the call was not attempted.

    The message contains ``"CircuitBreaker"``, the breaker's name and the seconds until the
    next trial call, so the guide's ``if "CircuitBreaker" in str(e)`` check works.
    """

    @property
    def name(self) -> str:
        """The name of the breaker that refused the call."""
        return str(self.args[1]) if len(self.args) > 1 else ""

    @property
    def retry_after(self) -> float:
        """Seconds until the breaker lets a trial call through (0.0 when half-open)."""
        return float(self.args[2]) if len(self.args) > 2 else 0.0


class RateLimitExceeded(ResilienceError):
    """The rate limiter had no token for the call: it was not attempted."""

    @property
    def limiter(self) -> str:
        """The name of the limiter that refused the call."""
        return str(self.args[1]) if len(self.args) > 1 else ""

    @property
    def endpoint(self) -> str | None:
        """The endpoint whose bucket was empty, or None for the default bucket."""
        return self.args[2] if len(self.args) > 2 else None

    @property
    def retry_after(self) -> float:
        """Seconds until the bucket holds the tokens the call needs."""
        return float(self.args[3]) if len(self.args) > 3 else 0.0

"""The exceptions a guarded call raises instead of running.

The native core raises them with their details as ``args`` and no message: the message is
formatted only when someone asks for it (``str(e)``, logging), so that refusing a call
costs little more than a plain ``raise``. Constructed by hand with a single message
argument, they behave like any exception.
"""

from __future__ import annotations

__all__ = ["BulkheadFull", "CircuitBreakerError", "RateLimitExceeded", "ResilienceError"]


class ResilienceError(Exception):
    """Base class of the errors peak-resilience raises instead of running a call."""


class CircuitBreakerError(ResilienceError):
    """The circuit is open (or its half-open trials are taken): the call was not attempted.

    Raised with ``args == (name, retry_after)``. The message contains ``"CircuitBreaker"``,
    the breaker's name and the seconds until the next trial call, so the guide's
    ``if "CircuitBreaker" in str(e)`` check works.
    """

    def _details(self) -> tuple[str, float] | None:
        if len(self.args) == 2 and isinstance(self.args[1], float):
            return str(self.args[0]), self.args[1]
        return None

    @property
    def name(self) -> str:
        """The name of the breaker that refused the call."""
        details = self._details()
        return details[0] if details else ""

    @property
    def retry_after(self) -> float:
        """Seconds until the breaker lets a trial call through (0.0 when half-open)."""
        details = self._details()
        return details[1] if details else 0.0

    def __str__(self) -> str:
        details = self._details()
        if details is None:
            return super().__str__()
        name, retry_after = details
        if retry_after > 0:
            return (
                f"CircuitBreaker '{name}' is OPEN: call not attempted, "
                f"next trial in {retry_after:.3f}s"
            )
        return (
            f"CircuitBreaker '{name}' is HALF_OPEN and its trial calls are taken: "
            "call not attempted"
        )


class RateLimitExceeded(ResilienceError):
    """The rate limiter had no token for the call: it was not attempted.

    Raised with ``args == (limiter, endpoint, retry_after)``.
    """

    def _details(self) -> tuple[str, str | None, float] | None:
        if len(self.args) == 3 and isinstance(self.args[2], float):
            limiter, endpoint, retry_after = self.args
            return str(limiter), None if endpoint is None else str(endpoint), retry_after
        return None

    @property
    def limiter(self) -> str:
        """The name of the limiter that refused the call."""
        details = self._details()
        return details[0] if details else ""

    @property
    def endpoint(self) -> str | None:
        """The endpoint whose bucket was empty, or None for the default bucket."""
        details = self._details()
        return details[1] if details else None

    @property
    def retry_after(self) -> float:
        """Seconds until the bucket holds the tokens the call needs."""
        details = self._details()
        return details[2] if details else 0.0

    def __str__(self) -> str:
        details = self._details()
        if details is None:
            return super().__str__()
        limiter, endpoint, retry_after = details
        where = f"'{limiter}'" if endpoint is None else f"'{limiter}' ({endpoint})"
        return f"rate limit of {where} exceeded: retry in {retry_after:.3f}s"


class BulkheadFull(ResilienceError):
    """The bulkhead's slots were all taken (for ``max_wait``): the call was not attempted.

    Raised with ``args == (name, max_concurrent)``. Its ``retry_after`` is 0.0: a slot
    comes back when a call in flight ends, which no one can foretell.
    """

    def _details(self) -> tuple[str, int] | None:
        if len(self.args) == 2 and isinstance(self.args[1], int):
            return str(self.args[0]), self.args[1]
        return None

    @property
    def name(self) -> str:
        """The name of the bulkhead that refused the call."""
        details = self._details()
        return details[0] if details else ""

    @property
    def max_concurrent(self) -> int:
        """The calls it lets run at once."""
        details = self._details()
        return details[1] if details else 0

    @property
    def retry_after(self) -> float:
        """Always 0.0: when a slot frees up is not known in advance."""
        return 0.0

    def __str__(self) -> str:
        details = self._details()
        if details is None:
            return super().__str__()
        name, max_concurrent = details
        return f"bulkhead '{name}' is full ({max_concurrent} calls in flight): call not attempted"

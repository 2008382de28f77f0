"""A peak-resilience limiter (and optionally a breaker) in front of a ccxt exchange.

``install(exchange, limiter, breaker=None)`` replaces the exchange's own throttle, which
counts for one process only, with ``limiter``: each REST request takes ccxt's cost of its
endpoint (times ``weight_per_cost``) from the limiter, waiting for it as ccxt would, and
every reply is fed to ``limiter.observe`` (used-weight headers, 429, 418). With a limiter
on the shared or Redis backend, every process and host that uses one API key draws on one
budget that the exchange's own counts keep exact. Works on ``ccxt`` and
``ccxt.async_support`` exchanges alike.

    import ccxt
    from peak_resilience.integrations.ccxt import install

    binance = install(
        ccxt.binance({"apiKey": ..., "secret": ...}),
        RateLimiter(limits=["6000/1m"], name="binance-key-1", backend="redis", ...),
        weight_per_cost=5,  # ccxt's binance spot costs are 0.2 per unit of weight
    )

ccxt itself is not imported: any object with ccxt's ``fetch2``, ``on_rest_response``
and ``calculate_rate_limiter_cost`` is guarded the same way.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, TypeVar

from peak_resilience._breaker import CircuitBreaker
from peak_resilience._limiter import RateLimiter
from peak_resilience.errors import RateLimitExceeded

__all__ = ["install"]

Exchange = TypeVar("Exchange")


def install(
    exchange: Exchange,
    limiter: RateLimiter,
    *,
    breaker: CircuitBreaker | None = None,
    weight_per_cost: float = 1.0,
    endpoint: str | None = None,
    timeout: float | None = None,
    observe: bool = True,
) -> Exchange:
    """Guards ``exchange``'s REST requests with ``limiter`` (and ``breaker``); returns it.

    - A request takes ``ceil(cost * weight_per_cost)`` tokens (ccxt's cost of the
      endpoint; a cost of 0 takes none) from the limiter's ``endpoint`` bucket (None: its
      own), waiting up to ``timeout`` seconds (None: as long as it takes, as ccxt's
      throttle does), else raising ``RateLimitExceeded`` without sending it.
    - ``observe``: every reply's status and headers go to ``limiter.observe`` (the
      exchange's used weight becomes the budget's; 429 and 418 pause it).
    - ``breaker`` goes around each request, outside the limiter: a request it refuses
      raises ``CircuitBreakerError`` without taking a token or being sent. It counts what
      its ``record_exceptions`` say: give it ``record_exceptions=ccxt.NetworkError`` so
      that neither a rejected order nor a wait for tokens counts as the exchange failing.
    """
    if not isinstance(limiter, RateLimiter):
        raise TypeError(f"limiter must be a peak_resilience RateLimiter, got {limiter!r}")
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise TypeError(f"breaker must be a peak_resilience CircuitBreaker, got {breaker!r}")
    if (
        isinstance(weight_per_cost, bool)
        or not isinstance(weight_per_cost, (int, float))
        or not math.isfinite(weight_per_cost)
        or weight_per_cost <= 0
    ):
        raise ValueError(f"weight_per_cost must be a positive number, got {weight_per_cost!r}")
    for method in ("fetch2", "throttle", "on_rest_response"):
        if not callable(getattr(exchange, method, None)):
            raise TypeError(f"{exchange!r} is not a ccxt exchange: it has no {method}()")
    ex: Any = exchange

    def weight_of(cost: float | None) -> int:
        cost = 1.0 if cost is None else float(cost)
        return math.ceil(cost * weight_per_cost - 1e-9) if cost > 0 else 0

    def refused() -> RateLimitExceeded:
        return RateLimitExceeded(limiter.name, endpoint, limiter.get_wait_time(endpoint))

    # ccxt calls throttle(cost) before each request when enableRateLimit is on: the limiter
    # takes its place. The breaker goes around the whole request (fetch2), outside the
    # limiter: a request it refuses takes no token.
    if inspect.iscoroutinefunction(ex.throttle):

        async def throttle_async(cost: float | None = None) -> None:
            weight = weight_of(cost)
            if weight and not await limiter.acquire_async(endpoint, cost=weight, timeout=timeout):
                raise refused()

        ex.throttle = throttle_async
    else:

        def throttle(cost: float | None = None) -> None:
            weight = weight_of(cost)
            if weight and not limiter.acquire_blocking(endpoint, cost=weight, timeout=timeout):
                raise refused()

        ex.throttle = throttle
    ex.enableRateLimit = True
    if breaker is not None:
        ex.fetch2 = breaker.call(ex.fetch2)
    if observe:
        replied = ex.on_rest_response

        def on_rest_response(
            code: int,
            reason: str,
            url: str,
            method: str,
            response_headers: Any,
            response_body: Any,
            request_headers: Any,
            request_body: Any,
        ) -> Any:
            limiter.observe(code, response_headers, endpoint)  # the budget the requests draw on
            return replied(
                code,
                reason,
                url,
                method,
                response_headers,
                response_body,
                request_headers,
                request_body,
            )

        ex.on_rest_response = on_rest_response
    return exchange

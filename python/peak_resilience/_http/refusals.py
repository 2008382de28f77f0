"""A refused call as an HTTP answer, the same for every web framework.

A rate limit is 429, an open circuit or a full bulkhead 503, all with ``Retry-After`` in
whole seconds rounded up (at least 1: a client told 0 would come straight back into the
same refusal) and a small JSON body naming what refused. The refusal is logged at DEBUG: it is the
service working as configured, not an error, and never a traceback.
"""

from __future__ import annotations

import json
import logging
import math

from peak_resilience._http.endpoints import Response
from peak_resilience.errors import BulkheadFull, CircuitBreakerError, RateLimitExceeded

__all__ = ["REFUSALS", "refusal_response", "retry_after_header"]

logger = logging.getLogger("peak_resilience.http")

#: The exceptions a framework integration turns into answers.
REFUSALS: tuple[type[Exception], ...] = (RateLimitExceeded, CircuitBreakerError, BulkheadFull)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` for a wait of ``seconds``: whole seconds, rounded up, at least 1."""
    if not math.isfinite(seconds):
        return "1"
    return str(max(1, math.ceil(seconds)))


def refusal_response(refusal: Exception, path: str = "") -> Response:
    """429 for ``RateLimitExceeded``, 503 for ``CircuitBreakerError`` and ``BulkheadFull``;
    TypeError for any other exception (an integration registers this for those only)."""
    if not isinstance(refusal, RateLimitExceeded | CircuitBreakerError | BulkheadFull):
        raise TypeError(f"not a refusal: {type(refusal).__name__}")
    retry_after = retry_after_header(refusal.retry_after)
    if isinstance(refusal, RateLimitExceeded):
        status = 429
        payload: dict[str, object] = {
            "error": "rate limit exceeded",
            "retry_after": int(retry_after),
            "limiter": refusal.limiter,
            "endpoint": refusal.endpoint,
        }
    elif isinstance(refusal, BulkheadFull):
        status = 503
        payload = {
            "error": "bulkhead full",
            "retry_after": int(retry_after),
            "bulkhead": refusal.name,
        }
    else:
        status = 503
        payload = {
            "error": "circuit open",
            "retry_after": int(retry_after),
            "breaker": refusal.name,
        }
    logger.debug("%s answered %d: %s", path or "request", status, refusal)
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Retry-After", retry_after),
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))),
    ]
    return Response(status, headers, body)

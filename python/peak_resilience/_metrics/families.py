"""The exported families: their names, types and help, and the rule their prefix obeys.

One list serves the prometheus-client collector and the exposition writer, so that both
export the same families under the same names.
"""

from __future__ import annotations

import re

from peak_resilience._native import LATENCY_BOUNDS

__all__ = [
    "DEFAULT_PREFIX",
    "FAMILIES",
    "LE_LABELS",
    "OTHER",
    "PREFIX_PATTERN",
    "STATE_LABELS",
]

#: The start of every family name unless configured (``metrics_prefix``).
DEFAULT_PREFIX = "peak_trade"
#: What a prefix must match in full: the start of a Prometheus metric name.
PREFIX_PATTERN = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

#: The label value that label values past the per-family bound are counted under.
OTHER = "other"

#: The ``from_state``/``to_state`` label of each state code (a ``CircuitState`` value).
STATE_LABELS = ("closed", "half_open", "open", "forced_open", "disabled", "metrics_only")

LE_LABELS = (*(repr(bound) for bound in LATENCY_BOUNDS), "+Inf")

#: (suffix, type, help). Counter names are given without "_total", as prometheus-client
#: wants them; the samples carry it.
FAMILIES = (
    (
        "circuit_breaker_state",
        "gauge",
        "Current circuit breaker state (0=closed, 1=half_open, 2=open, 3=forced_open, "
        "4=disabled, 5=metrics_only)",
    ),
    ("circuit_breaker_failures", "counter", "Failures recorded by the circuit breaker"),
    ("circuit_breaker_state_changes", "counter", "Circuit breaker state transitions"),
    (
        "circuit_breaker_rejections",
        "counter",
        "Calls refused by an open circuit breaker (the function was not run)",
    ),
    ("rate_limit_hits", "counter", "Requests to the rate limiter, allowed and rejected"),
    ("rate_limit_rejections", "counter", "Requests rejected by the rate limiter"),
    ("rate_limit_tokens_available", "gauge", "Tokens available in the rate limiter's bucket"),
    ("request_duration_seconds", "histogram", "Operation latency in seconds"),
    ("operation_failures", "counter", "Failed operations by exception type"),
    ("operation_successes", "counter", "Successful operations"),
    (
        "health_check_status",
        "gauge",
        'Health check outcome (1 healthy, 0 failing); critical="true" checks decide /health',
    ),
    (
        "metrics_label_values_folded",
        "counter",
        'Label values counted as "other" because their family had reached its bound',
    ),
    (
        "backend_errors",
        "counter",
        "Calls to a shared backend (Redis) that failed: unreachable or timed out",
    ),
    # Issue 8, circuit breaking: exported for the breakers that use the feature.
    (
        "circuit_breaker_shadow_state",
        "gauge",
        "State the breaker's machine is in while in metrics_only mode (0=closed, "
        "1=half_open, 2=open)",
    ),
    (
        "circuit_breaker_would_reject",
        "counter",
        "Calls a metrics_only breaker let through that it would have refused",
    ),
    (
        "circuit_breaker_slow_calls",
        "counter",
        "Successful calls counted as failures for lasting slow_call_duration or longer",
    ),
    # Issue 8 (rate limiting).
    (
        "rate_limit_window_tokens_available",
        "gauge",
        "Tokens available in each window of a rate limiter's bucket of several windows",
    ),
    (
        "rate_limit_paused_seconds",
        "gauge",
        "Seconds a paused rate limiter still refuses every request (0: not paused)",
    ),
    # Issue 16, the complete guard: exported for the operations and bulkheads that use it.
    ("retries", "counter", "Attempts of an operation's calls made again after a failure"),
    ("bulkhead_in_flight", "gauge", "Calls holding a slot of the bulkhead now"),
    (
        "bulkhead_rejections",
        "counter",
        "Calls refused because every slot of the bulkhead was taken (the function was not run)",
    ),
    ("timeouts", "counter", "Async calls cancelled for running past their timeout"),
)

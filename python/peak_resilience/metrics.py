"""Metrics: latency, outcomes, breaker and limiter counters, exported to Prometheus.

``from peak_resilience.metrics import metrics`` is the guide's
``from src.core.metrics import metrics``. The ``peak_trade_*`` families are in
prometheus-client's default registry whatever a process imports of the package.
"""

from __future__ import annotations

from peak_resilience._metrics.families import DEFAULT_PREFIX
from peak_resilience._metrics.recorder import (
    DEFAULT_MAX_SERIES,
    DEFAULT_SNAPSHOT_CAPACITY,
    LatencyTracker,
    Metrics,
    metrics,
)

__all__ = [
    "DEFAULT_MAX_SERIES",
    "DEFAULT_PREFIX",
    "DEFAULT_SNAPSHOT_CAPACITY",
    "LatencyTracker",
    "Metrics",
    "metrics",
]

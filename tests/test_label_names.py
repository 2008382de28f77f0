"""A name that cannot be written into the exposition (a lone surrogate) is refused where
it enters, with a ValueError naming the parameter, so that no scrape can break."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import generate_latest

from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, health_check
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock

BAD = "orders\ud800"  # a lone surrogate: what a mis-decoded byte becomes

ENTRY_POINTS: dict[str, tuple[Callable[[], Any], str]] = {
    "breaker name": (lambda: CircuitBreaker(name=BAD), "name"),
    "limiter name": (lambda: RateLimiter(5, 1, name=BAD), "name"),
    "endpoint": (lambda: RateLimiter(5, 1).add_endpoint(BAD, 1, 1), "endpoint name"),
    "tracked operation": (lambda: metrics.track_latency(BAD), "operation"),
    "reported failure": (lambda: metrics.record_operation_failure("op", BAD), "error_type"),
    "reported endpoint": (lambda: metrics.record_rate_limit_hit("lim", BAD), "endpoint"),
    "module": (lambda: with_resilience(BAD, "fetch"), "module"),
    "operation": (lambda: with_resilience("live", BAD), "operation"),
    "health check": (lambda: health_check.register(BAD, lambda: True), "health check name"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_name_with_a_lone_surrogate_is_refused_naming_the_parameter(
    fresh: ManualClock, entry: str
) -> None:
    make, parameter = ENTRY_POINTS[entry]

    with pytest.raises(ValueError, match=f"^{parameter} must be text that encodes as UTF-8"):
        make()

    body, _ = metrics.exposition()
    assert "\\ud800" not in body.decode("utf-8")  # nothing of it reached the exposition
    generate_latest()  # prometheus-client's own scrape of our collector still works

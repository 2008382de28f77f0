"""The metric families the exporter publishes: the one list that the deploy files
(deploy/prometheus-alerts.yml, deploy/grafana-dashboard.json) are checked against, and
that tests/test_deploy.py checks against a real scrape of the exporter."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    kind: str  # "counter", "gauge" or "histogram"
    labels: frozenset[str]

    def sample_names(self, name: str) -> frozenset[str]:
        """The names of the series a scrape holds for this family."""
        if self.kind == "histogram":
            return frozenset({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        return frozenset({name})


def _family(kind: str, *labels: str) -> Family:
    return Family(kind, frozenset(labels))


FAMILIES: dict[str, Family] = {
    # 0 closed, 1 half_open, 2 open (the values of CircuitState).
    "peak_trade_circuit_breaker_state": _family("gauge", "name"),
    "peak_trade_circuit_breaker_failures_total": _family("counter", "name"),
    "peak_trade_circuit_breaker_state_changes_total": _family(
        "counter", "name", "from_state", "to_state"
    ),
    # Every request, admitted or rejected (the guide: "Total requests").
    # Calls an open breaker refused without running them.
    "peak_trade_circuit_breaker_rejections_total": _family("counter", "name"),
    "peak_trade_rate_limit_hits_total": _family("counter", "limiter", "endpoint"),
    "peak_trade_rate_limit_rejections_total": _family("counter", "limiter", "endpoint"),
    "peak_trade_rate_limit_tokens_available": _family("gauge", "limiter", "endpoint"),
    "peak_trade_request_duration_seconds": _family("histogram", "operation"),
    "peak_trade_operation_failures_total": _family("counter", "operation", "error_type"),
    "peak_trade_operation_successes_total": _family("counter", "operation"),
    # 1 healthy, 0 not.
    "peak_trade_health_check_status": _family("gauge", "check", "critical"),
    # Failed calls to Redis, the backend of rate_limit_backend / circuit_breaker_backend.
    "peak_trade_backend_errors_total": _family("counter", "backend"),
    # Issue 8 (rate limiting): each window of a budget of several, and pauses (seconds).
    "peak_trade_rate_limit_window_tokens_available": _family(
        "gauge", "limiter", "endpoint", "window"
    ),
    "peak_trade_rate_limit_paused_seconds": _family("gauge", "limiter"),
    # Issue 16 (the complete guard): retries and timeouts per operation, bulkhead slots.
    "peak_trade_retries_total": _family("counter", "operation"),
    "peak_trade_bulkhead_in_flight": _family("gauge", "name"),
    "peak_trade_bulkhead_rejections_total": _family("counter", "name"),
    "peak_trade_timeouts_total": _family("counter", "operation"),
}

# The values that the state labels (from_state, to_state) take.
STATE_LABEL_VALUES = frozenset({"closed", "half_open", "open"})

# Labels Prometheus adds at scrape time, and the bucket bound of histograms.
SCRAPE_LABELS = frozenset({"job", "instance"})
BUCKET_LABEL = "le"


def family_of(sample_name: str) -> tuple[str, Family] | None:
    """The family a series name belongs to (`..._bucket` belongs to its histogram)."""
    for name, family in FAMILIES.items():
        if sample_name in family.sample_names(name):
            return name, family
    return None

"""The shipped alert rules, run by ``promtool test rules`` over the series this package
exported during a run in which objects were dropped and re-created: an alert fires for
what happened (a circuit that opened) and for nothing that did not."""

from __future__ import annotations

import gc
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitBreakerError
from peak_resilience.testing import ManualClock

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus-alerts.yml"
BREAKER = "run.venue_fetch"
LIMITER = "run.venue"
TARGET = {"job": "trader", "instance": "host:9108"}
MINUTES = 16


def scrape(
    series: dict[tuple[str, frozenset[tuple[str, str]]], dict[int, float]], minute: int
) -> None:
    """One scrape of this process, kept for our two names."""
    text = metrics.exposition()[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("name") == BREAKER or sample.labels.get("limiter") == LIMITER:
                key = (sample.name, frozenset(sample.labels.items()))
                series.setdefault(key, {})[minute] = sample.value


def run(clock: ManualClock) -> dict[tuple[str, frozenset[tuple[str, str]]], dict[int, float]]:
    """Two breakers of one name: at minute 2 both open and refuse, at minute 3 both
    recover. Two limiters of one name, the first rejecting
    before the run. Minute 7: the first breaker and the first limiter are dropped.
    Minute 9: the breaker is re-created (it never opens)."""
    series: dict[tuple[str, frozenset[tuple[str, str]]], dict[int, float]] = {}
    first = CircuitBreaker(failure_threshold=1, recovery_timeout=30, name=BREAKER, clock=clock)
    second = CircuitBreaker(failure_threshold=1, recovery_timeout=30, name=BREAKER, clock=clock)
    rejecting = RateLimiter(10, 3600, name=LIMITER, clock=clock)
    steady = RateLimiter(1000, 60, name=LIMITER, clock=clock)
    for _ in range(20):
        rejecting.acquire()  # 10 admitted, 10 rejected
    again = None
    for minute in range(MINUTES):
        if minute == 2:
            for breaker in (first, second):
                breaker.record_failure()
                with pytest.raises(CircuitBreakerError):
                    breaker.call(lambda: None)()
        if minute == 3:
            for breaker in (first, second):
                breaker.call(lambda: None)()  # the trial succeeds: closed again
        if minute == 7:
            del first, rejecting
            gc.collect()
        if minute == 9:
            again = CircuitBreaker(name=BREAKER, clock=clock)
        for _ in range(50):
            steady.acquire()  # steady traffic, never rejected
        scrape(series, minute)
        clock.advance(60)
    del second, again
    return series


def promtool_test(
    series: dict[tuple[str, frozenset[tuple[str, str]]], dict[int, float]],
    tests: list[dict[str, Any]],
    tmp_path: Path,
) -> subprocess.CompletedProcess[str]:
    input_series = []
    for (name, labels), values in sorted(series.items(), key=lambda item: sorted(item[0][1])):
        selector = ", ".join(f'{k}="{v}"' for k, v in sorted({**dict(labels), **TARGET}.items()))
        shown = " ".join(repr(values[m]) if m in values else "_" for m in range(MINUTES))
        input_series.append({"series": f"{name}{{{selector}}}", "values": shown})
    document = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "alert_rule_test": tests}],
    }
    path = tmp_path / "run.test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail("promtool not found: install the Debian package prometheus (scripts/packages)")
    return subprocess.run(
        [executable, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def fired(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alert as promtool expects it, its annotations templated as Prometheus would."""
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    rule = next(r for r in rules if r.get("alert") == alert)
    annotations = {}
    for key, text in rule["annotations"].items():
        for label, value in labels.items():
            text = text.replace(f"{{{{ $labels.{label} }}}}", value)
        annotations[key] = text
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def test_the_alert_rules_fire_for_what_happened_in_a_run_and_for_nothing_else(
    fresh: ManualClock, tmp_path: Path
) -> None:
    series = run(fresh)
    opened = fired("CircuitBreakerOpen", {**TARGET, "name": BREAKER})
    quiet = ["CircuitBreakerOpen", "CircuitBreakerStuckOpen", "RateLimitRejectionRateHigh"]
    tests: list[dict[str, Any]] = [
        {"eval_time": "4m", "alertname": "CircuitBreakerOpen", "exp_alerts": [opened]},
        {"eval_time": "1m", "alertname": "CircuitBreakerOpen", "exp_alerts": []},
    ]
    for minute in (8, 10, 12, 15):  # after the drop and after the re-creation
        tests += [
            {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []} for alert in quiet
        ]

    result = promtool_test(series, tests, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr

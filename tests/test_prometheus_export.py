"""The Prometheus families: the guide's names and labels, values read at scrape time,
both exposition formats, promtool, and the collector in a user's own registry."""

from __future__ import annotations

import gc
import itertools
import socket
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitBreakerError, health_check
from peak_resilience.testing import ManualClock

GUIDE_FAMILIES = {
    # family name as prometheus-client's parser reports it: (type, label names)
    "peak_trade_circuit_breaker_state": ("gauge", {"name"}),
    "peak_trade_circuit_breaker_failures": ("counter", {"name"}),
    "peak_trade_circuit_breaker_state_changes": ("counter", {"name", "from_state", "to_state"}),
    "peak_trade_rate_limit_hits": ("counter", {"limiter", "endpoint"}),
    "peak_trade_rate_limit_rejections": ("counter", {"limiter", "endpoint"}),
    "peak_trade_rate_limit_tokens_available": ("gauge", {"limiter", "endpoint"}),
    "peak_trade_request_duration_seconds": ("histogram", {"operation"}),
    "peak_trade_operation_failures": ("counter", {"operation", "error_type"}),
    "peak_trade_operation_successes": ("counter", {"operation"}),
    "peak_trade_health_check_status": ("gauge", {"check", "critical"}),
}

_names = itertools.count()
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def unique(stem: str) -> str:
    return f"{stem}-{next(_names)}-{id(_names)}"


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    metrics.reset()
    yield
    metrics.set_prefix("peak_trade")
    metrics.reset()


def scrape(accept: str | None = None) -> str:
    body, _content_type = metrics.exposition(accept)
    return body.decode()


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, family_sample: str, **labels: str) -> float | None:
    return samples(text).get((family_sample, frozenset(labels.items())))


@pytest.fixture
def populated(clock: ManualClock) -> Iterator[dict[str, str]]:
    """One of everything: a breaker that opened, a limiter that rejected, an operation
    with a failure, and reported values."""
    names = {k: unique(k) for k in ("breaker", "limiter", "operation")}
    breaker = CircuitBreaker(failure_threshold=1, name=names["breaker"], clock=clock)
    breaker.record_failure()
    limiter = RateLimiter(2, 60, name=names["limiter"], clock=clock)
    limiter.add_endpoint("fetch_ohlcv", 1, 60)
    for _ in range(3):
        limiter.acquire()
    with pytest.raises(ValueError), metrics.track_latency(names["operation"]):
        raise ValueError
    metrics.record_circuit_breaker_state_change("reported", "closed", "open")
    metrics.record_rate_limit_hit("api", "fetch_ticker")
    yield names
    del breaker, limiter


def test_every_family_of_the_guide_is_exported_with_its_type_and_labels(
    populated: dict[str, str],
) -> None:
    families = {f.name: f for f in text_string_to_metric_families(scrape())}
    for name, (kind, labels) in GUIDE_FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)


def test_the_state_gauge_reads_0_closed_2_open_and_1_once_the_timeout_passed(
    clock: ManualClock,
) -> None:
    name = unique("orders")
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30, name=name, clock=clock)
    state = "peak_trade_circuit_breaker_state"
    assert value(scrape(), state, name=name) == 0
    breaker.record_failure()
    assert value(scrape(), state, name=name) == 2
    clock.advance(30)  # no call arrives: the gauge must not stay "stuck open"
    assert value(scrape(), state, name=name) == 1


def test_breaker_failures_and_transitions_are_read_from_the_native_counters(
    clock: ManualClock,
) -> None:
    name = unique("orders")
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=5, name=name, clock=clock)
    for _ in range(2):
        breaker.record_failure()
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    text = scrape()
    assert value(text, "peak_trade_circuit_breaker_failures_total", name=name) == 2
    changes = "peak_trade_circuit_breaker_state_changes_total"
    for before, after in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]:
        assert value(text, changes, name=name, from_state=before, to_state=after) == 1
    assert value(text, changes, name=name, from_state="half_open", to_state="open") == 0


def test_rate_limit_hits_count_every_request_and_rejections_the_refused_ones(
    populated: dict[str, str],
) -> None:
    text = scrape()
    limiter = populated["limiter"]
    labels = {"limiter": limiter, "endpoint": "default"}
    assert value(text, "peak_trade_rate_limit_hits_total", **labels) == 3
    assert value(text, "peak_trade_rate_limit_rejections_total", **labels) == 1
    assert value(text, "peak_trade_rate_limit_tokens_available", **labels) == 0
    endpoint = {"limiter": limiter, "endpoint": "fetch_ohlcv"}
    assert value(text, "peak_trade_rate_limit_tokens_available", **endpoint) == 1


def test_reported_hits_are_merged_into_the_same_family(populated: dict[str, str]) -> None:
    text = scrape()
    hits = "peak_trade_rate_limit_hits_total"
    assert value(text, hits, limiter="api", endpoint="fetch_ticker") == 1
    state = "peak_trade_circuit_breaker_state"
    assert value(text, state, name="reported") == 2


def test_the_latency_histogram_and_outcomes_are_exported_per_operation(
    populated: dict[str, str],
) -> None:
    text = scrape()
    operation = populated["operation"]
    assert value(text, "peak_trade_request_duration_seconds_count", operation=operation) == 1
    assert (
        value(text, "peak_trade_request_duration_seconds_bucket", operation=operation, le="+Inf")
        == 1
    )
    failures = "peak_trade_operation_failures_total"
    assert value(text, failures, operation=operation, error_type="ValueError") == 1
    assert value(text, "peak_trade_operation_successes_total", operation=operation) == 0


def test_each_health_check_is_exported_as_1_healthy_or_0_failing_run_at_scrape() -> None:
    failing = [True]
    name = unique("exchange_link")
    health_check.register(name, lambda: not failing[0])
    status = "peak_trade_health_check_status"
    try:
        assert value(scrape(), status, check=name, critical="true") == 0
        failing[0] = False
        assert value(scrape(), status, check=name, critical="true") == 1
    finally:
        health_check.unregister(name)


def test_a_health_check_says_whether_it_is_critical_so_degraded_is_told_from_unhealthy() -> None:
    name = unique("cache_warm")
    health_check.register(name, lambda: False, critical=False)
    try:
        text = scrape()
        assert value(text, "peak_trade_health_check_status", check=name, critical="false") == 0
        assert value(text, "peak_trade_health_check_status", check=name, critical="true") is None
    finally:
        health_check.unregister(name)


def test_a_dropped_breaker_disappears_from_the_export(clock: ManualClock) -> None:
    name = unique("temporary")
    breaker = CircuitBreaker(name=name, clock=clock)
    assert value(scrape(), "peak_trade_circuit_breaker_state", name=name) == 0
    del breaker
    gc.collect()
    assert value(scrape(), "peak_trade_circuit_breaker_state", name=name) is None


def test_label_values_are_escaped(clock: ManualClock) -> None:
    name = 'quote " backslash \\ newline \n end'
    breaker = CircuitBreaker(name=name, clock=clock)
    assert value(scrape(), "peak_trade_circuit_breaker_state", name=name) == 0
    del breaker


def test_the_prefix_is_configurable(populated: dict[str, str]) -> None:
    metrics.set_prefix("desk7")
    names = {f.name for f in text_string_to_metric_families(scrape())}
    assert "desk7_circuit_breaker_state" in names
    assert not any(n.startswith("peak_trade") for n in names)


def test_an_invalid_prefix_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"metrics prefix.*'peak-trade'"):
        metrics.set_prefix("peak-trade")


def test_our_writer_and_the_prometheus_client_collector_export_the_same_samples(
    populated: dict[str, str],
) -> None:
    registry = CollectorRegistry()
    metrics.register_collector(registry)
    try:
        through_client = generate_latest(registry).decode()
    finally:
        metrics.unregister_collector(registry)
    ours = samples(scrape())
    theirs = samples(through_client)
    # Sums and token levels move between two reads; every other sample must agree.
    moving = ("_sum", "tokens_available")
    assert {k for k in ours if not k[0].endswith(moving)} == {
        k for k in theirs if not k[0].endswith(moving)
    }
    # Objects of earlier tests still alive in this process may run on the real clock and
    # move between the two reads too: values are compared on this test's own objects and
    # reported values, which nothing moves.
    own = {*populated.values(), "reported", "api"}
    stable = [k for k in ours if not k[0].endswith(moving) and own & {value for _, value in k[1]}]
    assert len(stable) > 10  # every family of this test's objects
    assert [k for k in stable if ours[k] != theirs[k]] == []


def test_openmetrics_is_served_when_the_accept_header_asks_for_it(
    populated: dict[str, str],
) -> None:
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}  # strict: raises on bad output
    assert families["peak_trade_circuit_breaker_failures"].type == "counter"
    assert families["peak_trade_request_duration_seconds"].type == "histogram"


def test_the_text_format_is_served_by_default() -> None:
    _body, content_type = metrics.exposition(None)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"


def test_the_exposition_passes_promtool_check_metrics(populated: dict[str, str]) -> None:
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scrape().encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""  # no lint warning either


def test_the_collector_serves_our_families_from_prometheus_client_start_http_server(
    populated: dict[str, str],
) -> None:
    registry = CollectorRegistry()
    metrics.register_collector(registry)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        metrics.unregister_collector(registry)
    name = populated["breaker"]
    assert value(text, "peak_trade_circuit_breaker_state", name=name) == 2


def test_the_collector_is_registered_in_the_global_registry_on_import() -> None:
    from prometheus_client import REGISTRY

    name = unique("global")
    breaker = CircuitBreaker(name=name)
    assert REGISTRY.get_sample_value("peak_trade_circuit_breaker_state", {"name": name}) == 0
    del breaker


def test_registering_into_the_same_registry_twice_is_harmless() -> None:
    registry = CollectorRegistry()
    metrics.register_collector(registry)
    metrics.register_collector(registry)
    metrics.unregister_collector(registry)
    assert generate_latest(registry) == b""


@settings(max_examples=75, deadline=None)
@given(name=st.text(min_size=1, max_size=40))
def test_any_breaker_name_round_trips_through_both_formats(name: str) -> None:
    breaker = CircuitBreaker(name=name)
    breaker.force_open()
    assert value(scrape(), "peak_trade_circuit_breaker_state", name=name) == 3
    om = scrape("application/openmetrics-text; version=1.0.0")
    states = {
        s.labels["name"]: s.value
        for f in parse_openmetrics(om)
        if f.name == "peak_trade_circuit_breaker_state"
        for s in f.samples
    }
    assert states[name] == 3
    del breaker


def test_calls_refused_by_an_open_breaker_are_exported(clock: ManualClock) -> None:
    name = unique("refusing")
    breaker = CircuitBreaker(failure_threshold=1, name=name, clock=clock)
    breaker.record_failure()
    for _ in range(3):
        with pytest.raises(CircuitBreakerError):
            breaker.call(lambda: None)()

    assert value(scrape(), "peak_trade_circuit_breaker_rejections_total", name=name) == 3

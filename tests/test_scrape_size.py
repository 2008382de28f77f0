"""A scrape grows with what it tells, not with the objects (issue 19): the cardinality
bound covers the names of constructed breakers, limiters and bulkheads (those past it are
exported as "other", counted), and a breaker that never opened exports no zeros for the
transitions that follow an opening."""

from __future__ import annotations

import gc
import itertools
import re
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from stress import scaled

from peak_resilience.metrics import Metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import Bulkhead, CircuitBreaker
from peak_resilience.testing import ManualClock

_names = itertools.count()


@pytest.fixture(autouse=True)
def objects_freed() -> Iterator[None]:
    """The thousands of breakers a test makes are gone before the next test's scrape."""
    yield
    gc.collect()


def unique(stem: str) -> str:
    return f"{stem}-{next(_names)}-{id(_names)}"


def samples(body: bytes, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``family`` (counters by their ``_total`` name) by sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for parsed in text_string_to_metric_families(body.decode())
        for sample in parsed.samples
        if sample.name == family
    }


def names_in(body: bytes, family: str, label: str = "name") -> set[str]:
    return {dict(labels)[label] for labels in samples(body, family)}


def test_breakers_past_the_bound_are_exported_as_other_with_every_count_kept() -> None:
    bounded, unbounded = Metrics(), Metrics()
    bounded.configure(max_series_per_family=3)
    unbounded.configure(max_series_per_family=1_000_000)
    breakers = [CircuitBreaker(failure_threshold=1, name=unique("symbol")) for _ in range(6)]
    for breaker in breakers:
        breaker.record_failure()  # each opens: one failure, one closed->open

    body = bounded.exposition()[0]
    whole = unbounded.exposition()[0]

    assert len(names_in(body, "peak_trade_circuit_breaker_state")) == 4  # three and other
    failures = samples(body, "peak_trade_circuit_breaker_failures_total")
    assert len(failures) == 4 and (("name", "other"),) in failures
    assert sum(failures.values()) == sum(
        samples(whole, "peak_trade_circuit_breaker_failures_total").values()
    )
    assert samples(body, "peak_trade_circuit_breaker_state")[(("name", "other"),)] == 2.0
    folded = samples(body, "peak_trade_metrics_label_values_folded_total")
    assert folded[(("family", "circuit_breaker_state"),)] >= 3  # these six, others' too


def test_a_name_shown_keeps_its_series_when_more_names_arrive() -> None:
    bounded = Metrics()
    bounded.configure(max_series_per_family=2)
    first = [CircuitBreaker(name=unique("first")) for _ in range(2)]
    shown = names_in(bounded.exposition()[0], "peak_trade_circuit_breaker_state")
    later = [CircuitBreaker(name=unique("later")) for _ in range(5)]

    again = names_in(bounded.exposition()[0], "peak_trade_circuit_breaker_state")

    assert again == shown | {"other"}
    assert not {b.name for b in later} & again
    del first


def test_limiters_and_bulkheads_past_the_bound_are_exported_as_other() -> None:
    bounded = Metrics()
    bounded.configure(max_series_per_family=2)
    limiters = [RateLimiter(5, 1.0, name=unique("budget")) for _ in range(4)]
    for limiter in limiters:
        limiter.acquire()
    bulkheads = [Bulkhead(2, name=unique("slots")) for _ in range(4)]

    body = bounded.exposition()[0]

    hits = samples(body, "peak_trade_rate_limit_hits_total")
    # Two names and "other" (other tests' live limiters among them, with their endpoints).
    assert len(names_in(body, "peak_trade_rate_limit_hits_total", "limiter")) == 3
    assert hits[(("endpoint", "default"), ("limiter", "other"))] >= 2
    assert len(names_in(body, "peak_trade_rate_limit_paused_seconds", "limiter")) == 3
    assert len(names_in(body, "peak_trade_bulkhead_in_flight")) == 3
    folded = samples(body, "peak_trade_metrics_label_values_folded_total")
    assert folded[(("family", "rate_limit_hits"),)] >= 2
    assert folded[(("family", "bulkhead_in_flight"),)] >= 2
    del limiters, bulkheads


def test_a_breaker_that_never_opened_exports_only_its_first_opening_at_zero() -> None:
    clock = ManualClock()
    quiet = CircuitBreaker(failure_threshold=1, recovery_timeout=1, name=unique("q"), clock=clock)
    cycled = CircuitBreaker(failure_threshold=1, recovery_timeout=1, name=unique("c"), clock=clock)
    cycled.record_failure()

    body = Metrics().exposition()[0]
    changes = samples(body, "peak_trade_circuit_breaker_state_changes_total")

    def of(name: str) -> dict[tuple[str, str], float]:
        return {
            (dict(k)["from_state"], dict(k)["to_state"]): v
            for k, v in changes.items()
            if dict(k)["name"] == name
        }

    assert of(quiet.name) == {("closed", "open"): 0.0}
    assert of(cycled.name) == {
        ("closed", "open"): 1.0,
        ("open", "half_open"): 0.0,
        ("half_open", "closed"): 0.0,
        ("half_open", "open"): 0.0,
    }


def test_twenty_thousand_breakers_scrape_as_small_as_two_thousand_and_pass_promtool() -> None:
    metrics = Metrics()  # the default bound: 1,000 names
    stem = unique("fleet")
    fleet = [CircuitBreaker(name=f"{stem}-{i}") for i in range(2_000)]
    small = metrics.exposition()[0]
    fleet += [CircuitBreaker(name=f"{stem}-{i}") for i in range(2_000, 20_000)]

    large = metrics.exposition()[0]

    assert len(large) - len(small) < 1_000  # the "other" counts grew a digit or two
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=large, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""
    del fleet


@pytest.mark.slow
def test_a_hundred_thousand_breakers_scrape_in_at_most_five_megabytes() -> None:
    count = scaled(100_000)
    stem = unique("fleet")
    fleet = [CircuitBreaker(name=f"{stem}-{i}") for i in range(count)]

    body = Metrics().exposition()[0]

    print(f"{count} breakers: {len(body)} bytes")
    assert len(body) <= 5_000_000
    shown = re.findall(rb"^peak_trade_circuit_breaker_state\{", body, re.MULTILINE)
    assert len(shown) <= 1_001
    del fleet


def test_a_dropped_breaker_that_counted_nothing_is_no_longer_exported() -> None:
    name = unique("short-lived")
    CircuitBreaker(name=name)  # dropped at once
    gc.collect()

    body = Metrics().exposition()[0]

    assert name not in names_in(body, "peak_trade_circuit_breaker_failures_total")

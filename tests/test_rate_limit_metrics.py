"""Issue 8's rate limiting in the metrics: tokens per window of a budget of several
windows, and how long a limiter stays paused; in both exposition writers and the JSON
summary, on every backend."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from metric_samples import ours, through_prometheus_client

from peak_resilience.metrics import metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.testing import ManualClock

LONG = 10_000_000
_names = itertools.count()


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    metrics.reset()
    yield
    metrics.reset()


def window_gauge(name: str, window: str, endpoint: str = "default") -> tuple[str, frozenset]:
    labels = {"limiter": name, "endpoint": endpoint, "window": window}
    return ("peak_trade_rate_limit_window_tokens_available", frozenset(labels.items()))


def paused_gauge(name: str) -> tuple[str, frozenset]:
    return ("peak_trade_rate_limit_paused_seconds", frozenset({("limiter", name)}))


def test_each_window_of_a_budget_is_exported_with_its_tokens(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    name = f"binance-{next(_names)}"
    limiter = make_limiter(limits=[(100, LONG), (20, LONG * 2)], name=name)
    assert limiter.acquire(cost=5)
    labels = limiter.default_bucket.window_labels
    for exported in (ours(), through_prometheus_client()):
        assert round(exported[window_gauge(name, labels[0])]) == 95
        assert round(exported[window_gauge(name, labels[1])]) == 15
        tokens_key = (
            "peak_trade_rate_limit_tokens_available",
            frozenset({("limiter", name), ("endpoint", "default")}),
        )
        assert round(exported[tokens_key]) == 15  # the bucket's tokens: its emptiest window


def test_a_one_window_budget_adds_no_per_window_series(clock: ManualClock) -> None:
    name = f"plain-{next(_names)}"
    limiter = RateLimiter(10, 60, name=name, clock=clock)
    exported = ours()
    assert not [
        k
        for k in exported
        if k[0].endswith("window_tokens_available") and ("limiter", name) in k[1]
    ]
    assert exported[paused_gauge(name)] == 0.0
    del limiter


def test_a_pause_is_exported_as_the_seconds_it_still_lasts(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    name = f"paused-{next(_names)}"
    limiter = make_limiter(10, LONG, name=name)
    limiter.pause(3600)
    for exported in (ours(), through_prometheus_client()):
        assert exported[paused_gauge(name)] == pytest.approx(3600, abs=5)
    limiter.resume()
    assert ours()[paused_gauge(name)] == 0.0


def test_the_summary_lists_windows_and_the_pause(clock: ManualClock) -> None:
    name = f"summary-{next(_names)}"
    limiter = RateLimiter(limits=["10/1s", "100/1m"], name=name, clock=clock)
    limiter.acquire(cost=4)
    limiter.pause(2)
    entry = metrics.get_summary()["rate_limiters"][name]["default"]
    assert entry["windows"] == {"1s": 6.0, "60s": 96.0}
    assert entry["paused_seconds"] == 2.0


def test_an_endpoint_named_default_is_refused_so_it_never_merges_with_the_own_bucket(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(100, 60, clock=clock)

    with pytest.raises(ValueError, match="endpoint name 'default'"):
        limiter.add_endpoint("default", 5, 60)

    assert limiter.endpoint_buckets() == {}

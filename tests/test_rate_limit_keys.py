"""Per-key budgets (issue 13): one limiter configured once and keyed at call time, its
buckets made on first use, idle ones forgotten, their number and their series bounded."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from peak_resilience import RateLimiter, _instances
from peak_resilience._bucket_series import series
from peak_resilience.metrics import metrics
from peak_resilience.testing import ManualClock


def test_each_key_has_a_budget_of_the_limiters_windows_of_its_own(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["3/1s", "5/1m"], clock=clock)
    btc, eth = limiter.for_key("BTCUSDT"), limiter.for_key("ETHUSDT")
    assert [btc.acquire() for _ in range(4)] == [True, True, True, False]
    assert eth.acquire(cost=3)
    assert limiter.acquire(cost=3)  # the limiter's own budget is untouched
    clock.advance(1)
    assert btc.acquire(cost=2)
    assert not btc.acquire()  # 5 a minute
    assert btc.get_stats()["windows"][1]["tokens_available"] < 1


def test_limiters_made_alike_each_keep_keys_of_their_own() -> None:
    # Most limiters share what they seldom have (issue 19): a key table is never among it.
    first, second = RateLimiter(2, 60.0), RateLimiter(2, 60.0, name="second")
    assert first.for_key("BTCUSDT").acquire(cost=2)
    assert not first.for_key("BTCUSDT").acquire()
    assert second.for_key("BTCUSDT").acquire(cost=2)
    assert set(first.endpoint_buckets()) == set(second.endpoint_buckets()) == {"key:BTCUSDT"}
    assert RateLimiter(2, 60.0).endpoint_buckets() == {}


def test_a_keys_windows_are_counted_as_the_limiters_are(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["3/1m fixed"], clock=clock)
    budget = limiter.for_key("BTCUSDT")
    assert budget.get_stats()["windows"][0]["window"] == limiter.get_stats()["windows"][0]["window"]
    clock.advance(60 - clock.now() % 60 + 59)  # the last second of a calendar minute
    assert sum(budget.acquire() for _ in range(5)) == 3
    clock.advance(1)  # a new minute: the fixed window starts afresh (a bucket would not)
    assert sum(budget.acquire() for _ in range(5)) == 3


def test_a_key_unused_for_its_longest_window_is_forgotten_and_comes_back_full(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(limits=["2/1s", "4/10s"], clock=clock)
    assert limiter.for_key("a").acquire(cost=2)
    clock.advance(9)
    limiter.for_key("b").acquire()
    assert set(limiter.endpoint_buckets()) == {"key:a", "key:b"}
    clock.advance(1)
    limiter.for_key("c").acquire()  # a new key sweeps the idle ones
    assert set(limiter.endpoint_buckets()) == {"key:b", "key:c"}
    assert limiter.for_key("a").acquire(cost=2)  # nothing lost: it was full again


def test_key_idle_after_sets_how_soon_an_unused_key_is_forgotten(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["10/1h"], clock=clock, key_idle_after=30)
    limiter.for_key("a").acquire()
    clock.advance(30)
    limiter.for_key("b").acquire()
    assert list(limiter.endpoint_buckets()) == ["key:b"]


def test_never_more_than_max_keys_the_least_recently_used_forgotten_first(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="peak_resilience.rate_limiter")
    limiter = RateLimiter(limits=["10/1h"], clock=clock, max_keys=3, name="three-keys")
    for key in ["a", "b", "c"]:
        limiter.for_key(key).acquire()
    limiter.for_key("a").acquire()  # a is used again: b is now the oldest
    limiter.for_key("d").acquire()
    limiter.for_key("e").acquire()
    assert set(limiter.endpoint_buckets()) == {"key:a", "key:d", "key:e"}
    assert "more than max_keys=3 keys in use" in caplog.text
    assert caplog.text.count("max_keys") == 1  # once a minute, not once a key


def test_memory_stays_bounded_under_a_stream_of_new_keys(
    clock: ManualClock, room_for_100_endpoints: None
) -> None:
    limiter = RateLimiter(limits=["5/1s"], clock=clock, max_keys=100, name="ip-stream")
    for i in range(20_000):
        limiter.for_key(f"10.0.{i // 256}.{i % 256}").acquire()
        clock.advance(0.001)
    assert len(limiter.endpoint_buckets()) <= 100
    kept = [pair for pair in _instances.retired.buckets if pair[0] == "ip-stream"]
    assert len(kept) <= metrics.max_series_per_family + 1  # what forgotten keys counted
    exported = endpoint_series("ip-stream")
    assert sum(int(e["requests"]) for e in exported.values()) == 20_000  # type: ignore[call-overload]


def test_a_key_forgotten_while_held_comes_back_when_used(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1/1s"], clock=clock, max_keys=1)
    held = limiter.for_key("a")
    assert held.acquire()
    limiter.for_key("b").acquire()  # forgets a
    assert "key:a" not in limiter.endpoint_buckets()
    assert held.acquire()  # a's own budget again (a full one), never the default bucket
    assert limiter.acquire()


def in_threads(work: Callable[[int], None], threads: int = 8) -> None:
    """``work(i)`` in ``threads`` threads at once, switching every microsecond (so that
    they interleave between any two steps)."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    started = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in started:
            thread.start()
        for thread in started:
            thread.join(10)
    finally:
        sys.setswitchinterval(interval)
    assert not errors


def test_eight_threads_on_one_key_take_exactly_its_budget(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["100/1h"], clock=clock)
    admitted = [0] * 8

    def work(i: int) -> None:
        for _ in range(50):
            admitted[i] += limiter.for_key("shared-key").acquire()

    in_threads(work)
    assert sum(admitted) == 100


def test_keys_forgotten_by_other_threads_never_draw_on_the_limiters_own_budget(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(limits=["100/1h"], clock=clock, max_keys=4)

    def work(i: int) -> None:
        for n in range(300):  # 8 threads x 3 keys each through 4 places: constant eviction
            limiter.for_key(f"churn-{i}-{n % 3}").acquire()

    in_threads(work)
    assert len(limiter.endpoint_buckets()) <= 4
    assert limiter.default_bucket.allowed + limiter.default_bucket.rejected == 0


def test_a_keys_budget_is_shared_by_every_process_of_the_limiters_name(
    make_shared_limiter: Callable[..., RateLimiter], clock: ManualClock
) -> None:
    first = make_shared_limiter(limits=["3/1h"], name="per-account", clock=clock)
    second = make_shared_limiter(limits=["3/1h"], name="per-account", clock=clock)
    assert first.for_key("acct-7").acquire(cost=2)
    assert second.for_key("acct-7").acquire()
    assert not second.for_key("acct-7").acquire()
    assert second.for_key("acct-8").acquire(cost=3)


def test_a_refusal_observed_for_a_key_pauses_that_key_only(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["10/1m"], clock=clock)
    limiter.for_key("ip-1").observe(429, {"Retry-After": "20"})
    assert not limiter.for_key("ip-1").acquire()
    assert limiter.for_key("ip-1").get_wait_time() == pytest.approx(20)
    assert limiter.for_key("ip-2").acquire()
    assert limiter.acquire()


def test_a_key_reply_sets_that_keys_window(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1200/1m"], clock=clock)
    limiter.for_key("acct-1").observe(200, {"X-MBX-USED-WEIGHT-1M": "1190"})
    assert sum(limiter.for_key("acct-1").acquire() for _ in range(20)) == 10


def test_a_keys_budget_can_be_awaited_or_waited_for(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1/1s"], clock=clock)
    budget = limiter.for_key("a")

    async def twice() -> list[bool]:
        return [await budget.acquire_async(), await budget.acquire_async(timeout=2)]

    assert asyncio.run(twice()) == [True, True]  # the manual clock advanced 1 s
    assert not budget.acquire_blocking(timeout=0.5)
    assert budget.acquire_blocking(timeout=1)


def test_a_key_must_be_a_non_empty_str() -> None:
    limiter = RateLimiter(10, 1)
    with pytest.raises(ValueError, match="key must be a non-empty str"):
        limiter.for_key("")
    with pytest.raises(ValueError, match="max_keys must be a positive int"):
        RateLimiter(10, 1, max_keys=0)
    with pytest.raises(ValueError, match="key_idle_after must be a positive number"):
        RateLimiter(10, 1, key_idle_after=-1)


# Metrics: the series of endpoints and keys stay within the cardinality guard ------------


@pytest.fixture
def room_for_100_endpoints() -> Iterator[None]:
    """The families' bound set 100 places above what the other tests' buckets hold;
    afterwards what this test's limiters counted and folded is forgotten, so that the
    places they took are free for the tests after it."""
    before, folded = metrics.max_series_per_family, series.folded
    metrics.get_summary()  # frees the places of the pairs no longer exported
    metrics.configure(max_series_per_family=len(series._own) + 100)
    # The bound over limiter names (issue 19) would fold this test's limiter among the
    # other tests' names at this bound: these tests count endpoints, not names.
    names, metrics._object_names = metrics._object_names, None
    yield
    metrics._object_names = names
    metrics.configure(max_series_per_family=before)
    series.folded = folded  # tests after this one count their own folds from there
    gc.collect()
    with _instances.lock:
        for pair in [p for p in _instances.retired.buckets if p[0] in ROOM_TAKERS]:
            del _instances.retired.buckets[pair]
    metrics.get_summary()


#: The limiters of the tests that fill the places of many series.
ROOM_TAKERS = {"ip-stream", "five-thousand-endpoints", "churning-keys"}


def endpoint_series(limiter: str) -> dict[str, dict[str, object]]:
    limiters: dict[str, dict[str, dict[str, object]]] = metrics.get_summary()["rate_limiters"]
    return limiters[limiter]


def test_5000_endpoints_give_at_most_the_bound_of_series_and_fold_the_rest_counted(
    room_for_100_endpoints: None,
) -> None:
    folded_before = metrics.get_summary()["folded_label_values"].get("rate_limit_hits", 0)
    limiter = RateLimiter(10, 1, name="five-thousand-endpoints")
    for i in range(5000):
        limiter.add_endpoint(f"ep{i}", 10, 1)
        limiter.acquire(f"ep{i}")
    exported = endpoint_series("five-thousand-endpoints")
    assert len(exported) == 102  # default, 100 endpoints, "other"
    assert exported["other"]["requests"] == 4900
    assert sum(int(e["requests"]) for e in exported.values()) == 5000  # type: ignore[call-overload]
    folded = metrics.get_summary()["folded_label_values"]["rate_limit_hits"]
    assert folded - folded_before == 4900
    text = metrics.exposition(None)[0].decode()
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("peak_trade_rate_limit_hits_total")
        and 'limiter="five-thousand-endpoints"' in line
    ]
    assert len(lines) == 102


def test_what_a_forgotten_key_counted_stays_in_its_series(room_for_100_endpoints: None) -> None:
    clock = ManualClock()
    limiter = RateLimiter(limits=["5/1s"], clock=clock, max_keys=10, name="churning-keys")
    for i in range(300):
        limiter.for_key(f"k{i}").acquire()
    exported = endpoint_series("churning-keys")
    # 100 keys kept their own series (forgotten or not), 200 counted under "other".
    assert len(exported) == 102
    assert exported["other"]["requests"] == 200
    assert sum(int(e["requests"]) for e in exported.values()) == 300  # type: ignore[call-overload]

"""backend="redis": one budget and one breaker for every host, on a real redis-server."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import backend_workers as workers
import pytest
import redis
from multiprocessing_helpers import CONTEXT, DEADLINE, run_all
from redis_server import RedisServer

from peak_resilience import (
    CircuitBreaker,
    CircuitBreakerError,
    CircuitState,
    RateLimiter,
    RateLimitExceeded,
)
from peak_resilience._backends.choice import backend_error_counts
from peak_resilience._backends.redis.breaker_store import RedisBreakerStore
from peak_resilience._backends.redis.bucket_store import RedisLimiterStore
from peak_resilience._modules.build import make_circuit_breaker, make_rate_limiter
from peak_resilience.resilience import CircuitState as State

TIMEOUT = 0.2


@pytest.fixture
def on_redis(redis_url: str) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": redis_url}


# The limiter ---------------------------------------------------------------------------


def test_two_limiters_of_one_name_draw_on_one_budget(on_redis: dict[str, Any]) -> None:
    first = RateLimiter(3, 3600, name="binance", **on_redis)
    second = RateLimiter(3, 3600, name="binance", **on_redis)
    taken = [first.acquire(), second.acquire(), first.acquire(), second.acquire()]
    assert taken == [True, True, True, False]
    stats = first.get_stats()
    assert (stats["allowed"], stats["rejected"]) == (3, 1)
    assert stats["rejection_rate"] == 0.25


def test_a_redis_limiter_is_the_one_rate_limiter_over_a_redis_store(
    on_redis: dict[str, Any],
) -> None:
    limiter = RateLimiter(3, 3600, name="binance", **on_redis)
    assert type(limiter) is RateLimiter
    assert isinstance(limiter.store, RedisLimiterStore)
    assert limiter.backend == "redis"


def test_the_wait_time_is_the_refill_of_the_missing_tokens(on_redis: dict[str, Any]) -> None:
    limiter = RateLimiter(2, 20, name="binance", **on_redis)
    assert limiter.acquire(cost=2)
    assert limiter.get_wait_time() == pytest.approx(10.0, abs=0.1)
    assert limiter.get_wait_time(cost=2) == pytest.approx(20.0, abs=0.1)


def test_a_budget_refills_on_redis_time(on_redis: dict[str, Any]) -> None:
    # 20 per second: a token every 50 ms, a real wait of a few of them.
    limiter = RateLimiter(20, 1, name="fast", **on_redis)
    assert limiter.acquire(cost=20)
    assert not limiter.acquire()
    time.sleep(0.12)
    assert limiter.acquire()


def test_an_endpoint_has_its_own_budget_in_redis(on_redis: dict[str, Any]) -> None:
    first = RateLimiter(1, 3600, name="binance", **on_redis)
    second = RateLimiter(1, 3600, name="binance", **on_redis)
    first.add_endpoint("fetch_ticker", 2, 3600)
    second.add_endpoint("fetch_ticker", 2, 3600)
    assert first.acquire()
    assert first.acquire("fetch_ticker") and second.acquire("fetch_ticker")
    assert not second.acquire("fetch_ticker")
    assert first.get_stats("fetch_ticker")["allowed"] == 2
    assert set(first.get_stats()["endpoints"]) == {"fetch_ticker"}


def test_a_cost_beyond_the_burst_is_the_same_error_as_in_process(on_redis: dict[str, Any]) -> None:
    limiter = RateLimiter(3, 60, name="binance", **on_redis)
    with pytest.raises(ValueError, match="larger than the bucket can ever hold"):
        limiter.acquire(cost=4)
    with pytest.raises(ValueError, match="cost must be >= 0"):
        limiter.acquire(cost=-1)


def test_keys_carry_a_hash_tag_for_redis_cluster(on_redis: dict[str, Any], redis_url: str) -> None:
    RateLimiter(3, 60, name="binance", **on_redis).acquire()
    CircuitBreaker(3, 60, "exchange", **on_redis).record_failure()
    keys = sorted(redis.Redis.from_url(redis_url).keys("*"))
    assert keys == [
        b"peak-resilience:{breaker:exchange}",
        b"peak-resilience:{limiter:binance}:default",
    ]


def test_a_redis_limiter_needs_a_name_and_a_url(redis_url: str) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        RateLimiter(3, 60, backend="redis", redis_url=redis_url)
    with pytest.raises(ValueError, match="needs redis_url"):
        RateLimiter(3, 60, name="x", backend="redis")
    with pytest.raises(ValueError, match="on_backend_error must be one of"):
        RateLimiter(3, 60, name="x", backend="redis", redis_url=redis_url, on_backend_error="retry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="redis_timeout"):
        RateLimiter(3, 60, name="x", backend="redis", redis_url=redis_url, redis_timeout=0)


def test_a_guarded_call_takes_its_token_from_redis(on_redis: dict[str, Any]) -> None:
    from peak_resilience._guard import guard

    first = RateLimiter(1, 3600, name="binance", **on_redis)
    second = RateLimiter(1, 3600, name="binance", **on_redis)
    call = guard(lambda: "sent", limiter=first)
    assert call() == "sent"
    with pytest.raises(RateLimitExceeded) as refused:
        guard(lambda: "sent", limiter=second)()
    assert refused.value.limiter == "binance"
    assert refused.value.retry_after > 0


def test_the_factory_builds_a_redis_limiter(on_redis: dict[str, Any]) -> None:
    limiter = make_rate_limiter(5, 1.0, name="factory", **on_redis)
    assert isinstance(limiter.store, RedisLimiterStore)


# The breaker ---------------------------------------------------------------------------


def test_a_breaker_opened_on_one_object_is_open_on_another(on_redis: dict[str, Any]) -> None:
    first = CircuitBreaker(2, 60, "exchange", **on_redis)
    second = CircuitBreaker(2, 60, "exchange", **on_redis)
    assert type(first) is CircuitBreaker and isinstance(first.store, RedisBreakerStore)
    first.record_failure()
    second.record_failure()
    assert first.state is CircuitState.OPEN and second.state is CircuitState.OPEN
    assert not second.allow()
    assert second.failure_count == 2
    assert 59 < second.retry_after <= 60
    assert (first.failure_total, first.rejection_total) == (2, 1)
    assert first.transition_count(State.CLOSED, State.OPEN) == 1


def test_an_open_breaker_refuses_the_call_without_running_it(on_redis: dict[str, Any]) -> None:
    breaker = CircuitBreaker(1, 60, "exchange", **on_redis)
    ran = []

    @breaker.call
    def submit() -> None:
        ran.append(1)
        raise ConnectionError("exchange down")

    with pytest.raises(ConnectionError):
        submit()
    with pytest.raises(CircuitBreakerError, match="CircuitBreaker 'exchange' is OPEN") as refused:
        submit()
    assert ran == [1]
    assert refused.value.name == "exchange" and refused.value.retry_after > 0


def test_a_successful_trial_closes_the_circuit_for_everyone(on_redis: dict[str, Any]) -> None:
    first = CircuitBreaker(1, 0.05, "exchange", **on_redis)
    second = CircuitBreaker(1, 0.05, "exchange", **on_redis)
    first.record_failure()
    time.sleep(0.1)
    assert second.state is CircuitState.HALF_OPEN
    assert first.allow()
    assert not second.allow()  # the single trial permit is taken
    first.record_success()
    assert second.state is CircuitState.CLOSED


def test_a_failed_trial_opens_the_circuit_again(on_redis: dict[str, Any]) -> None:
    breaker = CircuitBreaker(1, 0.05, "exchange", **on_redis)
    breaker.record_failure()
    time.sleep(0.1)

    @breaker.call
    def submit() -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        submit()
    assert breaker.state is CircuitState.OPEN
    assert breaker.transition_count(State.HALF_OPEN, State.OPEN) == 1


def test_async_calls_are_guarded_by_the_redis_breaker(on_redis: dict[str, Any]) -> None:
    breaker = CircuitBreaker(1, 60, "exchange", **on_redis)

    @breaker.call
    async def submit() -> str:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        asyncio.run(submit())
    with pytest.raises(CircuitBreakerError):
        asyncio.run(submit())


def test_reset_and_force_open_act_for_every_host(on_redis: dict[str, Any]) -> None:
    first = CircuitBreaker(3, 60, "exchange", **on_redis)
    second = CircuitBreaker(3, 60, "exchange", **on_redis)
    first.force_open()
    assert second.state is CircuitState.FORCED_OPEN
    second.reset()
    assert first.state is CircuitState.CLOSED


def test_a_transition_reaches_the_listeners_of_the_process_that_caused_it(
    on_redis: dict[str, Any],
) -> None:
    from peak_resilience.events import BreakerTransition, Event, add_listener, remove_listener

    seen: list[Event] = []
    add_listener(seen.append)
    try:
        CircuitBreaker(1, 60, "exchange", **on_redis).record_failure()
    finally:
        remove_listener(seen.append)
    assert [
        (e.breaker, e.from_state, e.to_state) for e in seen if isinstance(e, BreakerTransition)
    ] == [("exchange", CircuitState.CLOSED, CircuitState.OPEN)]


def test_the_factory_builds_a_redis_breaker(on_redis: dict[str, Any]) -> None:
    breaker = make_circuit_breaker(3, 10.0, "factory", **on_redis)
    assert isinstance(breaker.store, RedisBreakerStore)


# Many processes ------------------------------------------------------------------------


def test_four_processes_admit_exactly_the_budget_between_them(on_redis: dict[str, Any]) -> None:
    budget = 200
    start = CONTEXT.Barrier(5)
    reports = run_all(workers.take_all, [("pool", budget, on_redis, start, budget)] * 4, start)
    assert sum(reports) == budget


def test_a_breaker_opened_by_one_process_is_open_in_all(on_redis: dict[str, Any]) -> None:
    assert run_all(workers.fail_until_open, [("exchange", on_redis)]) == ["OPEN"]
    assert run_all(workers.report_breaker, [("exchange", on_redis)] * 3) == [("OPEN", False)] * 3


def test_a_process_killed_mid_run_takes_nothing_from_the_others(on_redis: dict[str, Any]) -> None:
    budget = 1_000_000
    victim = CONTEXT.Process(target=workers.spend_forever, args=("pool", budget, on_redis))
    victim.start()
    watcher = workers.limiter("pool", budget, on_redis)
    deadline = time.monotonic() + DEADLINE
    while watcher.get_stats()["allowed"] < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    victim.join(timeout=DEADLINE)
    assert victim.exitcode == -signal.SIGKILL
    spent = watcher.get_stats()["allowed"]
    # Whatever the victim's last request did, the budget is consistent: the others can
    # take exactly what is left, and the first refusal is a real one.
    small = RateLimiter(budget, workers.NO_REFILL_WINDOW, name="pool", **on_redis)
    assert small.acquire(cost=budget - spent)
    assert not small.acquire()


# Redis going away ----------------------------------------------------------------------


def outage_limiter(server: RedisServer, policy: str, name: str = "binance") -> RateLimiter:
    limiter = RateLimiter(
        3,
        3600,
        name=name,
        backend="redis",
        redis_url=server.url,
        on_backend_error=policy,
        redis_timeout=TIMEOUT,  # type: ignore[arg-type]
    )
    limiter.store.link.retry_interval = 0.0  # try Redis on every call
    return limiter


def test_with_redis_stopped_the_local_fallback_applies_and_redis_resumes(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Objects of earlier tests not yet collected, on servers now stopped, may fail a call
    # when collected here (as in test_backend_errors_are_exported_to_prometheus).
    gc.collect()
    limiter = outage_limiter(own_redis, "local")
    assert [limiter.acquire() for _ in range(4)] == [True, True, True, False]
    errors_before = backend_error_counts().get("redis", 0)
    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="peak_resilience.redis"):
        # The in-process bucket of the same settings (full: 3 tokens) stands in.
        assert [limiter.acquire() for _ in range(4)] == [True, True, True, False]
        assert not limiter.redis_available
        own_redis.start()
        # A fresh Redis (no persistence): a fresh budget in Redis, shared again.
        other = outage_limiter(own_redis, "local")
        assert [limiter.acquire(), other.acquire(), limiter.acquire(), other.acquire()] == [
            True,
            True,
            True,
            False,
        ]
    assert limiter.redis_available
    assert backend_error_counts()["redis"] - errors_before == 4
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    recovered = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(unreachable) == 1 and len(recovered) == 1


@pytest.mark.parametrize(("policy", "admitted"), [("fail_open", True), ("fail_closed", False)])
def test_with_redis_stopped_fail_open_admits_and_fail_closed_refuses(
    own_redis: RedisServer, policy: str, admitted: bool
) -> None:
    limiter = outage_limiter(own_redis, policy)
    own_redis.stop()
    assert [limiter.acquire() for _ in range(5)] == [admitted] * 5


def test_a_frozen_redis_never_holds_a_call_past_the_timeout(own_redis: RedisServer) -> None:
    limiter = outage_limiter(own_redis, "local")
    breaker = CircuitBreaker(
        3, 60, "exchange", backend="redis", redis_url=own_redis.url, redis_timeout=TIMEOUT
    )
    assert limiter.acquire() and breaker.allow()
    assert own_redis.process is not None
    pid = own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)  # connections stay open, no answer ever comes
    try:
        started = time.monotonic()
        assert limiter.acquire()  # from the local bucket
        assert breaker.allow()  # from the local breaker
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    # Two calls, each bounded by its socket timeout (a hang would never return).
    assert elapsed < 2 * TIMEOUT + 1.0


def test_a_redis_breaker_fails_closed_when_told_to(own_redis: RedisServer) -> None:
    breaker = CircuitBreaker(
        3,
        60,
        "exchange",
        backend="redis",
        redis_url=own_redis.url,
        redis_timeout=TIMEOUT,
        on_backend_error="fail_closed",
    )
    own_redis.stop()
    with pytest.raises(CircuitBreakerError, match="CircuitBreaker 'exchange' is OPEN"):
        breaker.call(lambda: None)()
    assert breaker.state is CircuitState.OPEN


def test_a_forked_child_opens_its_own_connection(on_redis: dict[str, Any]) -> None:
    import multiprocessing

    limiter = RateLimiter(3, 3600, name="binance", **on_redis)
    assert limiter.acquire()  # the parent's connection is open now
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    child = fork.Process(target=_acquire_and_report, args=(limiter, results))
    child.start()
    admitted, child_port = results.get(timeout=DEADLINE)
    child.join(timeout=DEADLINE)
    assert child.exitcode == 0
    assert admitted is True
    # Two processes on one socket would read each other's replies.
    assert child_port not in _local_ports(limiter)
    assert [limiter.acquire(), limiter.acquire()] == [True, False]


def _local_ports(limiter: RateLimiter) -> set[int]:
    """The local ports of the process' connections to Redis idle in its pool (the pool is
    the process's for the URL: earlier tests' calls may have left more than one)."""
    return {conn._sock.getsockname()[1] for conn in limiter.store.link.pool._idle}


def _acquire_and_report(limiter: RateLimiter, results: Any) -> None:
    admitted = limiter.acquire()
    (port,) = _local_ports(limiter)  # the child's pool starts empty: its one connection
    results.put((admitted, port))


def test_a_refused_call_returns_the_fallback(on_redis: dict[str, Any]) -> None:
    from peak_resilience._guard import guard

    breaker = CircuitBreaker(1, 60, "exchange", **on_redis)
    limiter = RateLimiter(1, 3600, name="binance", **on_redis)
    call = guard(lambda: "sent", breaker=breaker, limiter=limiter, fallback="queued")
    assert [call(), call()] == ["sent", "queued"]  # the second has no token
    breaker.force_open()
    assert call() == "queued"
    # A call refused for want of a token gives its breaker admission back.
    assert breaker.get_stats()["successes"] == 1


def test_a_guarded_call_waits_up_to_max_wait_for_a_redis_token(on_redis: dict[str, Any]) -> None:
    from peak_resilience._guard import guard

    limiter = RateLimiter(1, 3600, name="binance", **on_redis)
    waits: list[float] = []
    call = guard(lambda: "sent", limiter=limiter, max_wait=1.0, sleep=waits.append)
    assert call() == "sent"
    with pytest.raises(RateLimitExceeded):
        call()  # the next token is an hour away: more than max_wait, so no sleep
    assert waits == []


def test_with_redis_stopped_a_breaker_counts_on_its_local_stand_in(own_redis: RedisServer) -> None:
    breaker = CircuitBreaker(
        2, 60, "exchange", backend="redis", redis_url=own_redis.url, redis_timeout=TIMEOUT
    )
    breaker.store.link.retry_interval = 0.0
    own_redis.stop()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()


def test_a_trial_whose_process_died_is_presumed_lost_after_the_recovery_timeout(
    on_redis: dict[str, Any],
) -> None:
    first = CircuitBreaker(1, 0.05, "exchange", **on_redis)
    second = CircuitBreaker(1, 0.05, "exchange", **on_redis)
    first.record_failure()
    time.sleep(0.06)
    assert first.allow()  # the trial, whose caller then dies without a verdict
    assert not second.allow()
    time.sleep(0.06)
    assert second.allow()  # a new trial: the lost one no longer holds the circuit
    second.record_success()
    assert first.state is CircuitState.CLOSED


def test_backend_errors_are_exported_to_prometheus(own_redis: RedisServer) -> None:
    from peak_resilience.metrics import metrics

    def exported() -> float:
        return float(metrics.get_summary()["backend_errors"]["redis"])

    # Objects of earlier tests not yet collected, on servers now stopped, would be read by
    # each scrape below too (one failed call each): only this test's limiter may be alive.
    gc.collect()
    limiter = outage_limiter(own_redis, "fail_open")
    before = exported()
    own_redis.stop()
    limiter.acquire()
    limiter.acquire()
    del limiter  # (a live one would be read by the scrape: one more failed call)
    gc.collect()  # redis-py's exceptions leave reference cycles through their frames
    assert exported() - before == 2


def test_metrics_count_this_process_requests_to_a_redis_budget(on_redis: dict[str, Any]) -> None:
    from peak_resilience.metrics import metrics

    here = RateLimiter(2, 3600, name="exported-redis", **on_redis)
    # Another host: its request is in Redis, not in this process's counts.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from peak_resilience.rate_limiter import RateLimiter\n"
            "RateLimiter(2, 3600, name='exported-redis', backend='redis',"
            " redis_url=sys.argv[1]).acquire()\n",
            on_redis["redis_url"],
        ],
        check=True,
        timeout=60,
    )
    here.acquire()
    here.acquire()
    exported = metrics.get_summary()["rate_limiters"]["exported-redis"]["default"]
    assert (exported["requests"], exported["rejections"]) == (2, 1)
    assert exported["tokens_available"] == pytest.approx(0.0, abs=1e-3)
    assert here.get_stats()["total_requests"] == 3  # the budget's own: every host's


def test_redis_breakers_of_one_name_export_its_counts_once_and_drop_without_a_redis_call(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from peak_resilience.metrics import metrics

    def exported_failures() -> int:
        return int(metrics.get_summary()["circuit_breakers"]["exchange-drop"]["failures"])

    first = CircuitBreaker(5, 60, "exchange-drop", backend="redis", redis_url=own_redis.url)
    second = CircuitBreaker(5, 60, "exchange-drop", backend="redis", redis_url=own_redis.url)
    first.record_failure()
    second.record_failure()
    # Both read the two failures from Redis: the name's counter is 2, not 4.
    assert exported_failures() == 2
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)  # unreachable: a call would time out
    try:
        errors = backend_error_counts()["redis"]
        with caplog.at_level(logging.WARNING, logger="peak_resilience.redis"):
            del second
            gc.collect()
        # A finalizer may run on an event loop: it asked Redis nothing.
        assert backend_error_counts()["redis"] == errors
        assert caplog.records == []
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    first.record_failure()
    assert exported_failures() == 3

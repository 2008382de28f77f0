"""backend="redis": what a guarded call sends to Redis, and what it waits for."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
import redis

from peak_resilience import CircuitBreaker, CircuitState, RateLimiter
from peak_resilience._backends.redis import carried
from peak_resilience._guard import guard
from peak_resilience.errors import RateLimitExceeded


def scripts_run(admin: redis.Redis) -> int:
    stats = admin.info("commandstats").get("cmdstat_evalsha", {"calls": 0})
    calls: int = stats["calls"]
    return calls


def successes_in_redis(admin: redis.Redis) -> int:
    """The venue breaker's successes as another host reads them: the hash itself."""
    return int(admin.hget("peak-resilience:{breaker:venue}", "successes") or 0)


def wait_for_successes_in_redis(admin: redis.Redis, expected: int) -> None:
    """Waits (5 s at most) until Redis holds ``expected`` successes of the venue breaker."""
    deadline = time.monotonic() + 5
    while successes_in_redis(admin) != expected:
        assert time.monotonic() < deadline, f"{successes_in_redis(admin)} successes, not {expected}"
        time.sleep(0.01)


def test_an_admitted_call_runs_one_script_its_success_carried_by_the_next_call(
    redis_url: str,
) -> None:
    admin = redis.Redis.from_url(redis_url, socket_timeout=5)
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(3, 60, "venue", **on_redis)
    limiter = RateLimiter(1000, 3600, name="venue", **on_redis)
    order = guard(lambda: "filled", breaker=breaker, limiter=limiter)
    assert order() == "filled"
    calls = 200
    before, started = scripts_run(admin), time.monotonic()
    assert [order() for _ in range(calls)] == ["filled"] * calls
    elapsed = time.monotonic() - started
    # One script per call: its admission carries the success of the call before. (A
    # success left alone CARRIED_AT_MOST seconds is sent by the flusher: a few rounds at
    # most in the time the loop took.)
    assert scripts_run(admin) - before <= calls + elapsed / carried.CARRIED_AT_MOST + 2
    assert breaker.get_stats()["successes"] == calls + 1  # a read carries the last one
    assert limiter.get_stats()["allowed"] == calls + 1


def test_successes_reach_other_hosts_without_another_call(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url, socket_timeout=5)
    breaker = CircuitBreaker(3, 60, "venue", backend="redis", redis_url=redis_url)
    order = guard(lambda: "filled", breaker=breaker)
    assert [order() for _ in range(3)] == ["filled"] * 3
    # What another host reads: the flusher sends the last success.
    wait_for_successes_in_redis(admin, 3)


def test_successes_not_sent_yet_are_sent_at_exit_and_never_by_a_forked_child(
    redis_url: str,
) -> None:
    # A process whose flusher would wait an hour: what reaches Redis is sent at exit.
    # Its child, forked with one success not sent yet, sends its own two, not that one.
    child = textwrap.dedent(
        f"""
        import os, sys
        from peak_resilience._backends.redis import carried
        carried.CARRIED_AT_MOST = 3600
        from peak_resilience import CircuitBreaker
        from peak_resilience._guard import guard
        breaker = CircuitBreaker(3, 60, "venue", backend="redis", redis_url={redis_url!r})
        order = guard(lambda: "filled", breaker=breaker)
        order()
        pid = os.fork()
        if pid == 0:
            order(); order()
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    admin = redis.Redis.from_url(redis_url, socket_timeout=5)
    assert successes_in_redis(admin) == 3


def test_a_guarded_call_is_admitted_in_one_script_and_refused_in_one(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url, socket_timeout=5)
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(3, 60, "venue", **on_redis)
    limiter = RateLimiter(1, 3600, name="venue", **on_redis)
    order = guard(lambda: "filled", breaker=breaker, limiter=limiter, fallback="queued")
    before, started = scripts_run(admin), time.monotonic()
    assert order() == "filled"
    ran, elapsed = scripts_run(admin) - before, time.monotonic() - started
    # The breaker's admission and the token in one script (its success is carried by
    # the next one, or sent by the flusher CARRIED_AT_MOST seconds after).
    assert ran == 1 or (ran == 2 and elapsed >= carried.CARRIED_AT_MOST)
    breaker.get_stats()  # a read carries the success
    before = scripts_run(admin)
    assert order() == "queued"
    # The refusal, its wait time included, in the admission's own reply; a closed
    # circuit's admission holds no permit, so nothing is sent to give it back.
    assert scripts_run(admin) - before == 1
    with pytest.raises(RateLimitExceeded) as refused:
        guard(lambda: "filled", breaker=breaker, limiter=limiter)()
    assert refused.value.retry_after == pytest.approx(3600, abs=5)


def test_a_trial_refused_its_token_gives_its_permit_back(redis_url: str) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(1, 3600, "venue", **on_redis)
    empty = RateLimiter(1, 3600, name="empty", **on_redis)
    assert empty.acquire()
    breaker.open_for(0.001)
    time.sleep(0.01)
    refused = guard(lambda: "filled", breaker=breaker, limiter=empty, fallback="queued")
    assert refused() == "queued"  # the trial permit taken and given back, in one script
    full = RateLimiter(1, 3600, name="full", **on_redis)
    # The permit is free for the next call (else held for the hour-long recovery timeout).
    assert guard(lambda: "filled", breaker=breaker, limiter=full)() == "filled"
    assert breaker.state is CircuitState.CLOSED


def test_a_failure_and_a_trial_are_recorded_before_the_call_returns(redis_url: str) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(1, 60, "venue", **on_redis)
    other_host = CircuitBreaker(1, 60, "venue", **on_redis)

    def reject() -> None:
        raise TimeoutError("exchange")

    with pytest.raises(TimeoutError):
        guard(reject, breaker=breaker)()
    # The failure opened the circuit: its transition is known at once, here and there.
    assert breaker.state is CircuitState.OPEN
    assert other_host.state is CircuitState.OPEN
    breaker.open_for(0.001)
    time.sleep(0.01)
    assert breaker.state is CircuitState.HALF_OPEN
    assert guard(lambda: "filled", breaker=breaker)() == "filled"
    # A trial's success closes the circuit: waited for, and seen everywhere at once.
    assert other_host.state is CircuitState.CLOSED


def test_a_carried_success_ends_the_failure_streak_before_the_next_failure_counts(
    redis_url: str,
) -> None:
    breaker = CircuitBreaker(2, 60, "venue", backend="redis", redis_url=redis_url)
    answers = iter([ConnectionError("venue down"), "filled", ConnectionError("venue down")])

    def order() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    guarded = guard(order, breaker=breaker)
    with pytest.raises(ConnectionError):
        guarded()
    assert guarded() == "filled"
    with pytest.raises(ConnectionError):
        guarded()  # carries the success, counted first: a streak of one, not two
    assert breaker.state is CircuitState.CLOSED
    assert breaker.get_stats()["successes"] == 1


def test_a_success_carried_past_a_reset_counts_but_ends_no_streak_of_the_new_period(
    redis_url: str,
) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(2, 60, "venue", **on_redis)
    other_host = CircuitBreaker(2, 60, "venue", **on_redis)
    assert guard(lambda: "filled", breaker=breaker)() == "filled"
    # Meanwhile the circuit is reset elsewhere (a new closed period) and a call fails there.
    other_host.force_open()
    other_host.reset()
    other_host.record_failure()
    breaker.get_stats()  # carries the success: counted, in the period that admitted it
    assert breaker.get_stats()["successes"] == 1
    other_host.record_failure()  # the new period's second failure in a row
    assert breaker.state is CircuitState.OPEN


def test_an_async_guarded_call_runs_one_script_its_success_sent_by_the_flusher(
    redis_url: str,
) -> None:
    admin = redis.Redis.from_url(redis_url, socket_timeout=5)
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(3, 60, "venue", **on_redis)
    limiter = RateLimiter(1000, 3600, name="venue", **on_redis)

    async def send() -> str:
        return "filled"

    order = guard(send, breaker=breaker, limiter=limiter)
    calls = 50

    async def run() -> tuple[list[str], int, float]:
        await order()  # the loop's connection made, the scripts loaded
        before, started = scripts_run(admin), time.monotonic()
        answers = [await order() for _ in range(calls)]
        return answers, scripts_run(admin) - before, time.monotonic() - started

    answers, ran, elapsed = asyncio.run(run())
    assert answers == ["filled"] * calls
    # One script a call (its admission); the successes, carried by no async call, go in
    # the flusher's few scripts (one per CARRIED_AT_MOST seconds at most, for all of them).
    assert ran <= calls + elapsed / carried.CARRIED_AT_MOST + 2
    wait_for_successes_in_redis(admin, calls + 1)

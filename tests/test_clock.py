"""Time: breakers and limiters run on the monotonic clock only, so a wall-clock jump (NTP
step, an operator's `date -s`, a VM resumed) changes nothing; and the manual clock's
boundaries: exactly at ``recovery_timeout``, a bucket refilled to the last nanosecond,
idle for a year."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.testing import ManualClock

NS = 1e-9
YEAR = 365 * 86400.0

# -- the manual clock's boundaries ---------------------------------------------------------


def test_a_breaker_stays_open_until_exactly_recovery_timeout() -> None:
    clock = ManualClock(start=0.0)
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60.0, clock=clock)
    breaker.record_failure()

    clock.advance(60.0 - NS)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(NS, abs=NS / 2)
    assert not breaker.allow()

    clock.advance(NS)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()


def test_a_bucket_refills_its_token_at_the_last_nanosecond_not_before() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(1, 1.0, clock=clock)
    assert limiter.acquire()
    assert not limiter.acquire()

    clock.advance(1.0 - NS)
    assert not limiter.acquire()
    assert limiter.get_wait_time() == pytest.approx(NS, abs=NS / 2)

    clock.advance(NS)
    assert limiter.acquire()
    assert not limiter.acquire()


def test_a_limiter_idle_for_a_year_holds_its_burst_and_no_more() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(10, 1.0, burst=5, clock=clock)
    for _ in range(5):
        assert limiter.acquire()

    clock.advance(YEAR)

    assert [limiter.acquire() for _ in range(6)] == [True] * 5 + [False]
    assert limiter.get_wait_time() == pytest.approx(0.1)


def test_a_breaker_idle_for_a_year_offers_a_trial_and_then_closes() -> None:
    clock = ManualClock(start=0.0)
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()

    clock.advance(YEAR)

    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.retry_after == 0.0
    assert breaker.call(lambda: "ok")() == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 0


def test_a_closed_breaker_idle_for_a_year_still_counts_failures_from_zero() -> None:
    clock = ManualClock(start=0.0)
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=30.0, clock=clock)
    breaker.record_failure()
    clock.advance(YEAR)
    breaker.record_failure()

    # Consecutive failures: the year between them does not reset the count.
    assert breaker.failure_count == 2
    assert breaker.state is CircuitState.CLOSED


# -- the wall clock jumps ------------------------------------------------------------------


def test_a_wall_clock_jump_seen_by_python_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60.0)
    limiter = RateLimiter(1, 3600.0)
    breaker.record_failure()
    assert limiter.acquire()
    wall = time.time()

    monkeypatch.setattr(time, "time", lambda: wall + 7200)
    monkeypatch.setattr(time, "time_ns", lambda: int((wall + 7200) * 1e9))

    assert breaker.state is CircuitState.OPEN
    assert 59.0 < breaker.retry_after <= 60.0
    assert not limiter.acquire()
    assert 3599.0 < limiter.get_wait_time() <= 3600.0


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from peak_resilience.rate_limiter import RateLimiter
    from peak_resilience.resilience import CircuitBreaker

    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60.0)
    breaker.record_failure()
    limiter = RateLimiter(1, 3600.0)
    limiter.acquire()
    wall = time.time()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent moved the wall clock meanwhile
    print(json.dumps({
        "wall_moved": time.time() - wall,
        "state": breaker.state.name,
        "retry_after": breaker.retry_after,
        "admitted": limiter.acquire(),
        "wait": limiter.get_wait_time(),
    }), flush=True)
    """
)


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed")
@pytest.mark.parametrize("jump", ["+2h", "+400d", "-2h", "-30d"])
def test_a_real_wall_clock_jump_in_the_process_changes_nothing(jump: str, tmp_path: Path) -> None:
    # libfaketime moves CLOCK_REALTIME (and time(), gettimeofday) of the child, including
    # what the native core would read; CLOCK_MONOTONIC is left alone, as the kernel does
    # on a `date -s`.
    stamp = tmp_path / "faketime"
    stamp.write_text("+0\n")
    env = {
        **os.environ,
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(stamp),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        stamp.write_text(f"{jump}\n")
        child.stdin.write("go\n")
        child.stdin.flush()
        seen = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait(timeout=30)

    seconds = {"h": 3600, "d": 86400}[jump[-1]] * int(jump[1:-1])
    expected = seconds if jump[0] == "+" else -seconds
    assert abs(seen["wall_moved"] - expected) < 60, "the wall clock did move"
    assert seen["state"] == "OPEN"
    assert 50.0 < seen["retry_after"] <= 60.0
    assert seen["admitted"] is False
    assert 3500.0 < seen["wait"] <= 3600.0

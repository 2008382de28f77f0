"""Async waits on the loop's terms, in real time: while many tasks wait for tokens, a
1 ms ticker on the same loop keeps ticking, the rate is held, and waiters queue.

The manual clock cannot show a frozen loop (its sleep advances time at once), so these
tests run on the real clock. The bound on a ticker gap is generous (a shared, loaded
machine may pause any process for a while); a thread sleep in the waiting path would
freeze the loop for the whole wait, far beyond it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loop_lag import TICK, p99, while_ticking

from peak_resilience import RateLimiter, configure
from peak_resilience.resilience_helpers import get_all_rate_limiters, with_resilience
from peak_resilience.testing import fresh_resilience

#: 400 tokens a second, a burst of 20: 120 waiting tasks take about 0.25 s.
RATE, WINDOW, BURST, TASKS = 400, 1.0, 20, 120
#: Far below the wait a blocked loop would show (the whole 0.25 s), far above a tick.
GAP_BOUND = 0.15


@pytest.fixture
def real_time_module(tmp_path: Path) -> Iterator[None]:
    """The module ``feed`` on the real clock: RATE per WINDOW with a burst of BURST."""
    config = tmp_path / "resilience.toml"
    config.write_text(
        "[resilience.feed]\n"
        f"rate_limit_requests = {RATE}\nrate_limit_window = {WINDOW}\n"
        f"rate_limit_burst = {BURST}\nbulkhead_max_wait = 5.0\n"
    )
    with fresh_resilience(None):
        configure(config)
        yield


def _attempts_per_admission(limiter: RateLimiter, admitted: int) -> float:
    stats = limiter.get_stats()
    return float(stats["total_requests"]) / admitted


def _report(name: str, gaps: list[float], taken: float) -> None:
    print(
        f"{name}: {len(gaps)} ticks in {taken:.3f}s, max gap {max(gaps) * 1e3:.2f} ms "
        f"(tick {gaps.index(max(gaps))}), p99 {p99(gaps) * 1e3:.2f} ms"
    )


@pytest.mark.parametrize("policies", [{}, {"timeout": 5.0}], ids=["plain", "with_timeout"])
def test_with_resilience_max_wait_on_an_async_def_keeps_the_loop_ticking(
    real_time_module: None, policies: dict[str, Any]
) -> None:
    @with_resilience("feed", "ticker", use_rate_limiter=True, max_wait=5.0, **policies)
    async def ticker() -> str:
        return "tick"

    async def waiters() -> list[Any]:
        return await asyncio.gather(*(ticker() for _ in range(TASKS + BURST)))

    results, gaps, taken = asyncio.run(while_ticking(waiters))

    _report("with_resilience", gaps, taken)
    assert results == ["tick"] * (TASKS + BURST)
    assert max(gaps) < GAP_BOUND
    # The rate is held: TASKS tokens had to be refilled.
    assert taken >= TASKS / RATE * 0.95
    (limiter,) = get_all_rate_limiters().values()
    assert _attempts_per_admission(limiter, TASKS + BURST) <= 1.5


def test_acquire_async_at_the_limit_keeps_the_loop_ticking_and_tries_about_once() -> None:
    limiter = RateLimiter(RATE, WINDOW, burst=BURST)

    async def waiters() -> list[Any]:
        return await asyncio.gather(
            *(limiter.acquire_async(timeout=5.0) for _ in range(TASKS + BURST))
        )

    results, gaps, taken = asyncio.run(while_ticking(waiters))

    _report("acquire_async", gaps, taken)
    assert results == [True] * (TASKS + BURST)
    assert max(gaps) < GAP_BOUND
    assert taken >= TASKS / RATE * 0.95
    assert _attempts_per_admission(limiter, TASKS + BURST) <= 1.5


def test_acquire_async_serves_waiters_in_arrival_order_high_priority_first() -> None:
    limiter = RateLimiter(RATE, WINDOW, burst=1, priority_reserve=0)
    order: list[str] = []

    async def wait(name: str, priority: str | None) -> None:
        assert await limiter.acquire_async(timeout=5.0, priority=priority)
        order.append(name)

    async def scenario() -> None:
        assert limiter.acquire()  # the bucket is empty: everyone below waits
        first = asyncio.ensure_future(wait("normal-1", None))
        await asyncio.sleep(0)  # normal-1 is the first in line
        rest = [
            asyncio.ensure_future(wait(name, priority))
            for name, priority in [
                ("normal-2", None),
                ("high-1", "high"),
                ("normal-3", None),
                ("high-2", "high"),
            ]
        ]
        await asyncio.gather(first, *rest)

    asyncio.run(scenario())

    assert order == ["normal-1", "high-1", "high-2", "normal-2", "normal-3"]


def test_an_async_def_waiting_for_a_bulkhead_slot_keeps_the_loop_ticking(
    real_time_module: None,
) -> None:
    in_flight, most = 0, 0

    @with_resilience("feed", "depth", max_concurrent=2)
    async def depth() -> str:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(TICK)
        in_flight -= 1
        return "depth"

    async def waiters() -> list[Any]:
        return await asyncio.gather(*(depth() for _ in range(40)))

    results, gaps, taken = asyncio.run(while_ticking(waiters))

    _report("bulkhead", gaps, taken)
    assert results == ["depth"] * 40
    assert most == 2
    assert max(gaps) < GAP_BOUND


def test_waiters_on_two_event_loops_in_two_threads_all_get_their_tokens() -> None:
    limiter = RateLimiter(RATE, WINDOW, burst=1)
    results: dict[str, list[bool]] = {}

    def run(name: str) -> None:
        async def waiters() -> list[bool]:
            return await asyncio.gather(*(limiter.acquire_async(timeout=5.0) for _ in range(40)))

        results[name] = asyncio.run(waiters())

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results == {"a": [True] * 40, "b": [True] * 40}


def test_an_async_def_waiting_for_a_slot_spends_no_tokens_while_every_slot_is_taken(
    real_time_module: None,
) -> None:
    release = asyncio.Event()

    @with_resilience("feed", "orders", use_rate_limiter=True, max_concurrent=1)
    async def order(hold: bool) -> str:
        if hold:
            await release.wait()
        return "sent"

    async def scenario() -> list[str]:
        first = asyncio.ensure_future(order(True))
        await asyncio.sleep(0)  # the first call holds the only slot
        second = asyncio.ensure_future(order(False))
        await asyncio.sleep(0.1)  # the second looks for a slot about 20 times meanwhile
        release.set()
        return list(await asyncio.gather(first, second))

    assert asyncio.run(scenario()) == ["sent", "sent"]
    (limiter,) = get_all_rate_limiters().values()
    # The first call's token, the second's first try (refused by the bulkhead after its
    # token, the limiter coming first) and its admission once the slot came back.
    assert limiter.get_stats()["allowed"] == 3


def test_a_cancelled_waiter_hands_its_turn_on_and_leaves_the_line() -> None:
    limiter = RateLimiter(RATE, WINDOW, burst=1)

    async def scenario() -> list[bool]:
        assert limiter.acquire()  # the bucket is empty: everyone below waits
        first = asyncio.ensure_future(limiter.acquire_async(timeout=5.0))
        await asyncio.sleep(0)  # the first in line, sleeping until its token is due
        middle = asyncio.ensure_future(limiter.acquire_async(timeout=5.0))
        last = asyncio.ensure_future(limiter.acquire_async(timeout=5.0))
        await asyncio.sleep(0)
        first.cancel()
        middle.cancel()
        return [await asyncio.wait_for(last, timeout=30), first.cancelled(), middle.cancelled()]

    assert asyncio.run(scenario()) == [True, True, True]

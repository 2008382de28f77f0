"""The bulkhead: a cap on calls in flight, on its own and through with_resilience."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import flask
import pytest

from peak_resilience.errors import BulkheadFull
from peak_resilience.integrations.flask import install
from peak_resilience.resilience import Bulkhead
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock


def test_a_call_over_the_cap_is_refused_without_running() -> None:
    bulkhead = Bulkhead(1, name="orders")
    ran: list[str] = []

    @bulkhead.call
    def inner() -> str:
        ran.append("inner")
        return "ran"

    @bulkhead.call
    def outer() -> str:
        return inner()

    with pytest.raises(BulkheadFull) as refused:
        outer()
    assert ran == []
    assert refused.value.name == "orders"
    assert "bulkhead 'orders' is full (1 calls in flight)" in str(refused.value)
    assert bulkhead.rejections == 1
    assert bulkhead.in_flight == 0


def test_a_slot_is_given_back_when_the_call_raises() -> None:
    bulkhead = Bulkhead(1)

    @bulkhead.call
    def failing() -> None:
        raise ConnectionError("exchange down")

    for _ in range(3):
        with pytest.raises(ConnectionError):
            failing()
    assert bulkhead.in_flight == 0
    assert bulkhead.rejections == 0


def test_the_context_manager_holds_a_slot_for_its_block() -> None:
    bulkhead = Bulkhead(2)
    with bulkhead, bulkhead:
        assert bulkhead.in_flight == 2
        with pytest.raises(BulkheadFull), bulkhead:
            pass
    assert bulkhead.in_flight == 0


def test_a_full_bulkhead_waits_max_wait_on_the_manual_clock_then_refuses() -> None:
    clock = ManualClock(start=100.0)
    bulkhead = Bulkhead(1, max_wait=0.5, clock=clock)
    assert bulkhead.acquire()
    assert not bulkhead.acquire()
    assert clock.now() == pytest.approx(100.5)
    assert bulkhead.rejections == 1


def test_a_slot_freed_while_waiting_is_taken() -> None:
    bulkhead = Bulkhead(1, max_wait=30.0)
    assert bulkhead.acquire()
    freed = threading.Timer(0.05, bulkhead.release)
    freed.start()
    try:
        assert bulkhead.acquire()
    finally:
        freed.cancel()
    assert bulkhead.in_flight == 1
    assert bulkhead.rejections == 0


def test_threads_never_hold_more_slots_than_the_cap() -> None:
    bulkhead = Bulkhead(3)
    most = 0
    lock = threading.Lock()
    gate = threading.Barrier(8)

    @bulkhead.call
    def work() -> None:
        nonlocal most
        with lock:
            most = max(most, bulkhead.in_flight)

    def worker() -> None:
        gate.wait()
        for _ in range(2000):
            with contextlib.suppress(BulkheadFull):
                work()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= most <= 3
    assert bulkhead.in_flight == 0


def test_async_calls_over_the_cap_are_refused_and_slots_come_back() -> None:
    bulkhead = Bulkhead(2)
    release = asyncio.Event()

    @bulkhead.call
    async def held() -> str:
        await release.wait()
        return "done"

    async def scenario() -> tuple[list[Any], int]:
        first = asyncio.ensure_future(held())
        second = asyncio.ensure_future(held())
        await asyncio.sleep(0)
        with pytest.raises(BulkheadFull):
            await held()
        in_flight = bulkhead.in_flight
        release.set()
        return list(await asyncio.gather(first, second)), in_flight

    results, in_flight = asyncio.run(scenario())
    assert results == ["done", "done"]
    assert in_flight == 2
    assert bulkhead.in_flight == 0
    assert bulkhead.rejections == 1


def test_async_with_refuses_after_max_wait_without_blocking_the_loop() -> None:
    bulkhead = Bulkhead(1, max_wait=0.02)

    async def scenario() -> None:
        async with bulkhead:
            with pytest.raises(BulkheadFull):
                async with bulkhead:
                    pass

    asyncio.run(scenario())
    assert bulkhead.rejections == 1
    assert bulkhead.in_flight == 0


def test_with_resilience_max_concurrent_refuses_with_the_fallback(fresh: ManualClock) -> None:
    @with_resilience("exchange", "submit_order", max_concurrent=1, fallback="busy")
    def submit(nested: bool) -> str:
        return submit(False) if nested else "sent"

    assert submit(True) == "busy"
    assert submit(False) == "sent"


def test_the_max_concurrent_key_caps_every_operation_of_the_module(
    fresh: ManualClock, write_config: Any
) -> None:
    from peak_resilience.config import configure

    configure(
        write_config(
            """
            [resilience.exchange]
            max_concurrent = 1
            """
        )
    )

    @with_resilience("exchange", "cancel")
    def cancel(nested: bool) -> str:
        return cancel(False) if nested else "cancelled"

    with pytest.raises(BulkheadFull) as refused:
        cancel(True)
    assert refused.value.name == "exchange.cancel"


def test_a_cap_below_one_is_refused_naming_max_concurrent() -> None:
    with pytest.raises(ValueError, match="max_concurrent must be a positive integer, got 0"):
        Bulkhead(0)


def test_a_full_bulkhead_answers_503_with_retry_after_through_flask() -> None:
    app = flask.Flask("bulkhead_app")
    install(app)
    bulkhead = Bulkhead(1, name="quotes")

    @app.get("/quote")
    def quote() -> str:
        with bulkhead:
            return "ok"

    with bulkhead:
        answer = app.test_client().get("/quote")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.get_json() == {"error": "bulkhead full", "retry_after": 1, "bulkhead": "quotes"}


class _CountingBulkhead(Bulkhead):
    """Counts the looks for a free slot."""

    attempts = 0

    def try_acquire(self) -> bool:
        type(self).attempts += 1
        return super().try_acquire()


def test_async_waiters_get_slots_in_arrival_order_and_only_the_first_looks() -> None:
    bulkhead = _CountingBulkhead(1, max_wait=5.0)
    admitted: list[int] = []

    async def scenario() -> None:
        release = asyncio.Event()

        async def holder() -> None:
            async with bulkhead:
                await release.wait()

        async def waiter(i: int) -> None:
            async with bulkhead:
                admitted.append(i)
                await asyncio.sleep(0.002)

        held = asyncio.create_task(holder())
        await asyncio.sleep(0)
        waiters = []
        for i in range(20):
            waiters.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0.001)  # arrivals spread over the polls
        _CountingBulkhead.attempts = 0
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(held, *waiters)

    asyncio.run(scenario())
    assert admitted == list(range(20))
    # Polling waiters would look 20 at a time every 5 ms (over 200 looks here); in line
    # only the first does: about one look per poll while held, and one per admission.
    assert _CountingBulkhead.attempts < 4 * 20
    assert bulkhead.in_flight == 0 and bulkhead.rejections == 0


def test_an_async_waiter_out_of_time_leaves_the_line_and_the_next_is_served() -> None:
    bulkhead = Bulkhead(1, max_wait=0.03)

    async def scenario() -> tuple[bool, bool]:
        async with bulkhead:
            impatient = asyncio.create_task(_enter(bulkhead))
            await asyncio.sleep(0.06)
            refused = impatient.done() and isinstance(impatient.exception(), BulkheadFull)
        return refused, await _enter(bulkhead) is None

    refused, served = asyncio.run(scenario())
    assert refused and served
    assert bulkhead.rejections == 1 and bulkhead.in_flight == 0


async def _enter(bulkhead: Bulkhead) -> None:
    async with bulkhead:
        return None


def test_a_reload_changes_the_cap_of_a_decorated_operation_in_place(
    fresh: ManualClock, write_config: Any
) -> None:
    from peak_resilience.config import configure

    configure(write_config("[resilience.exchange]\nmax_concurrent = 1\n"))

    @with_resilience("exchange", "cancel", fallback="busy")
    def cancel(depth: int) -> str:
        return cancel(depth - 1) if depth else "cancelled"

    assert cancel(1) == "busy"
    configure(write_config("[resilience.exchange]\nmax_concurrent = 2\n", name="wider.toml"))
    assert cancel(1) == "cancelled"
    assert cancel(2) == "busy"
    assert cancel.bulkhead.max_concurrent == 2  # type: ignore[attr-defined]


def test_a_reload_gives_an_async_operation_the_new_slot_wait(
    fresh: ManualClock, write_config: Any
) -> None:
    from peak_resilience.config import configure

    configure(write_config("[resilience.exchange]\nmax_concurrent = 1\n"))

    @with_resilience("exchange", "fetch")
    async def fetch(release: asyncio.Event) -> str:
        await release.wait()
        return "fetched"

    async def second_call_while_the_first_holds_the_slot() -> str:
        release = asyncio.Event()
        first = asyncio.ensure_future(fetch(release))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(fetch(release))
        await asyncio.sleep(0)
        release.set()
        await first
        return await second

    with pytest.raises(BulkheadFull):
        asyncio.run(second_call_while_the_first_holds_the_slot())
    configure(
        write_config(
            "[resilience.exchange]\nmax_concurrent = 1\nbulkhead_max_wait = 5\n",
            name="patient.toml",
        )
    )
    assert asyncio.run(second_call_while_the_first_holds_the_slot()) == "fetched"


def test_a_reload_that_adds_or_removes_a_bulkhead_is_refused_naming_max_concurrent(
    fresh: ManualClock, write_config: Any
) -> None:
    from peak_resilience.config import ConfigError, configure

    configure(write_config("[resilience.exchange]\nmax_concurrent = 1\n"))
    with_resilience("exchange", "cancel")(lambda: "cancelled")
    with_resilience("backtest", "fetch")(lambda: "fetched")

    with pytest.raises(ConfigError, match="cannot remove the bulkhead") as removed:
        configure(write_config("[resilience]\n", name="none.toml"))
    assert removed.value.key == "max_concurrent"
    with pytest.raises(ConfigError, match="cannot add a bulkhead") as added:
        configure(write_config("[resilience]\nmax_concurrent = 3\n", name="all.toml"))
    assert added.value.key == "max_concurrent"


def test_a_reload_leaves_a_cap_given_to_the_decorator_alone(
    fresh: ManualClock, write_config: Any
) -> None:
    from peak_resilience.config import configure

    configure(write_config("[resilience.exchange]\nmax_concurrent = 1\n"))
    cancel = with_resilience("exchange", "cancel", max_concurrent=4)(lambda: "cancelled")
    configure(write_config("[resilience.exchange]\nmax_concurrent = 2\n", name="b.toml"))
    assert cancel.bulkhead.max_concurrent == 4  # type: ignore[attr-defined]

"""A guarded ``async def`` call is an awaitable like a coroutine: tasks, gather, close,
throw and garbage collection see what they would see of the function's own coroutine,
and whatever ends the call gives back what it took."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import time
import weakref
from typing import Any

import pytest

from peak_resilience import _instances
from peak_resilience.resilience import Bulkhead
from peak_resilience.resilience_helpers import get_all_circuit_breakers, with_resilience
from peak_resilience.testing import ManualClock


class Venue:
    @with_resilience("exchange", "quote")
    async def quote(self, symbol: str, *, depth: int = 1) -> tuple[str, int]:
        await asyncio.sleep(0)
        return symbol, depth


def test_a_guarded_async_method_is_a_coroutine_function_taking_its_arguments(
    fresh: ManualClock,
) -> None:
    venue = Venue()

    assert inspect.iscoroutinefunction(Venue.quote)
    assert inspect.iscoroutinefunction(venue.quote)
    assert asyncio.run(venue.quote("BTC", depth=5)) == ("BTC", 5)


def test_guarded_calls_run_as_tasks_and_in_gather(fresh: ManualClock) -> None:
    @with_resilience("exchange", "fetch")
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    async def scenario() -> list[int]:
        task = asyncio.create_task(fetch(1))
        return [await task, *await asyncio.gather(fetch(2), fetch(3))]

    assert asyncio.run(scenario()) == [2, 4, 6]
    assert _instances.operation("exchange.fetch").snapshot()["successes"] == 3


def test_a_call_closed_before_it_is_awaited_takes_nothing_and_never_runs(
    fresh: ManualClock,
) -> None:
    ran = []
    bulkhead = Bulkhead(1)

    @bulkhead.call
    async def order() -> None:
        ran.append(True)

    call = order()
    call.close()

    assert ran == []
    assert bulkhead.in_flight == 0


def test_a_call_closed_while_suspended_gives_its_slot_back_and_counts_no_outcome(
    fresh: ManualClock,
) -> None:
    bulkhead = Bulkhead(1)
    closed = []

    @bulkhead.call
    async def held() -> None:
        try:
            await asyncio.Event().wait()
        except GeneratorExit:
            closed.append(True)
            raise

    async def scenario() -> int:
        call = held()
        task = asyncio.ensure_future(asyncio.sleep(0))
        # Step the call by hand once: it takes its slot and suspends.
        call.send(None)
        in_flight = bulkhead.in_flight
        call.close()
        await task
        return in_flight

    assert asyncio.run(scenario()) == 1
    assert closed == [True]
    assert bulkhead.in_flight == 0


def test_a_suspended_call_dropped_unfinished_gives_its_slot_back(fresh: ManualClock) -> None:
    bulkhead = Bulkhead(1)

    @bulkhead.call
    async def held() -> None:
        await asyncio.Event().wait()

    async def scenario() -> int:
        call = held()
        call.send(None)
        in_flight = bulkhead.in_flight
        del call
        gc.collect()
        return in_flight

    assert asyncio.run(scenario()) == 1
    assert bulkhead.in_flight == 0


def test_an_exception_thrown_into_a_call_never_started_ends_it_without_running(
    fresh: ManualClock,
) -> None:
    ran = []

    @with_resilience("exchange", "fetch")
    async def fetch() -> None:
        ran.append(True)

    call = fetch()
    with pytest.raises(ValueError, match="thrown"):
        call.throw(ValueError("thrown"))
    assert ran == []


def test_a_call_awaited_twice_is_refused_like_a_coroutine(fresh: ManualClock) -> None:
    @with_resilience("exchange", "fetch")
    async def fetch() -> str:
        return "tick"

    async def scenario() -> None:
        call = fetch()
        assert await call == "tick"
        with pytest.raises(RuntimeError, match="already awaited"):
            await call

    asyncio.run(scenario())


def test_calls_one_after_another_each_see_their_own_arguments(fresh: ManualClock) -> None:
    @with_resilience("exchange", "fetch")
    async def fetch(n: int, *, scale: int = 1) -> int:
        return n * scale

    async def scenario() -> list[int]:
        return [await fetch(1, scale=10), await fetch(2), await fetch(3, scale=100), await fetch(4)]

    assert asyncio.run(scenario()) == [10, 2, 300, 4]


def test_a_finished_call_kept_by_its_caller_stays_finished_while_new_calls_run(
    fresh: ManualClock,
) -> None:
    @with_resilience("exchange", "fetch")
    async def fetch(n: int) -> int:
        return n

    first = fetch(1)
    with pytest.raises(StopIteration) as done:
        first.send(None)
    second = fetch(2)
    with pytest.raises(StopIteration) as second_done:
        second.send(None)

    assert (done.value.value, second_done.value.value) == (1, 2)
    assert second is not first
    with pytest.raises(RuntimeError, match="already awaited"):
        first.send(None)


def test_a_finished_call_lets_go_of_its_arguments_as_a_coroutine_does(
    fresh: ManualClock,
) -> None:
    class Order:
        pass

    @with_resilience("exchange", "submit")
    async def submit(order: Order) -> None:
        return None

    order = Order()
    released = weakref.ref(order)
    call = submit(order)
    del order
    with pytest.raises(StopIteration):
        call.send(None)

    assert released() is None


def test_the_function_s_own_exception_reaches_the_caller_unchanged(fresh: ManualClock) -> None:
    failure = ConnectionError("venue down")

    @with_resilience("exchange", "fetch")
    async def fetch() -> None:
        await asyncio.sleep(0)
        raise failure

    async def scenario() -> BaseException:
        with pytest.raises(ConnectionError) as raised:
            await fetch()
        return raised.value

    assert asyncio.run(scenario()) is failure
    assert get_all_circuit_breakers()["exchange.fetch"].failure_count == 1


def test_a_call_with_a_timeout_that_never_suspends_needs_no_event_loop(
    fresh: ManualClock,
) -> None:
    @with_resilience("exchange", "fetch", timeout=1.0)
    async def fetch() -> str:
        return "tick"

    call = fetch()
    with pytest.raises(StopIteration) as done:
        call.send(None)
    assert done.value.value == "tick"


def test_a_timeout_counts_the_time_the_call_ran_before_it_first_suspended(
    fresh: ManualClock,
) -> None:
    # Past its deadline before its first await: cancelled at that await, rather than
    # given its whole timeout again from there (which the short sleep would beat). Real
    # time, a fraction of a second; the assertion is the exception, never a duration.
    @with_resilience("exchange", "fetch", timeout=0.1)
    async def fetch() -> str:
        time.sleep(0.15)
        await asyncio.sleep(0.05)
        return "late"

    async def scenario() -> Any:
        with pytest.raises(TimeoutError):
            await fetch()

    asyncio.run(scenario())
    assert _instances.timeouts["exchange.fetch"] == 1


def test_a_guarded_partial_of_an_async_function_is_a_coroutine_function(
    fresh: ManualClock,
) -> None:
    async def fetch(symbol: str) -> str:
        return symbol

    guarded = with_resilience("exchange", "fetch")(functools.partial(fetch, "BTC"))

    assert inspect.iscoroutinefunction(guarded)
    assert asyncio.run(guarded()) == "BTC"

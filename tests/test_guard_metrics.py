"""Issue 16's policies in the metrics: retries, bulkhead slots and refusals, timeouts; in
both exposition writers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from metric_samples import ours, through_prometheus_client

from peak_resilience.errors import BulkheadFull
from peak_resilience.metrics import metrics
from peak_resilience.resilience import Bulkhead, Retry
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    metrics.reset()
    yield
    metrics.reset()


def sample(family: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (family, frozenset(labels.items()))


@pytest.mark.parametrize("read", [ours, through_prometheus_client])
def test_retries_of_an_operation_are_counted(fresh: ManualClock, read: object) -> None:
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("reset")
        return "filled"

    with_resilience("exchange", "fetch", retry=Retry(3, on=ConnectionError))(flaky)()
    exported = read()  # type: ignore[operator]
    assert exported[sample("peak_trade_retries_total", operation="exchange.fetch")] == 2


@pytest.mark.parametrize("read", [ours, through_prometheus_client])
def test_bulkhead_slots_in_flight_and_refusals_are_exported(read: object) -> None:
    name = f"orders-{read.__name__}"  # type: ignore[attr-defined]
    bulkhead = Bulkhead(1, name=name)
    seen: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    @bulkhead.call
    def submit(nested: bool) -> None:
        if nested:
            seen.update(read())  # type: ignore[operator]
            with pytest.raises(BulkheadFull):
                submit(False)

    submit(True)
    after = read()  # type: ignore[operator]
    in_flight = sample("peak_trade_bulkhead_in_flight", name=name)
    assert seen[in_flight] == 1
    assert after[in_flight] == 0
    rejections = sample("peak_trade_bulkhead_rejections_total", name=name)
    assert after[rejections] == 1


@pytest.mark.parametrize("read", [ours, through_prometheus_client])
def test_timeouts_of_an_operation_are_counted(fresh: ManualClock, read: object) -> None:
    async def hanging() -> None:
        await asyncio.Event().wait()

    guarded = with_resilience("exchange", "stream", timeout=0.01)(hanging)
    with pytest.raises(TimeoutError):
        asyncio.run(guarded())
    exported = read()  # type: ignore[operator]
    assert exported[sample("peak_trade_timeouts_total", operation="exchange.stream")] == 1


def test_the_refusals_of_a_dropped_bulkhead_stay_counted_under_its_name() -> None:
    bulkhead = Bulkhead(1, name="dropped-bulkhead")
    with bulkhead:
        assert not bulkhead.try_acquire() and not bulkhead.acquire()
    del bulkhead
    gc.collect()
    exported = ours()
    assert exported[sample("peak_trade_bulkhead_rejections_total", name="dropped-bulkhead")] == 1
    assert sample("peak_trade_bulkhead_in_flight", name="dropped-bulkhead") not in exported

"""``get_snapshots()`` is oldest-first even while many threads write events at once."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from peak_resilience.metrics import metrics


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter allows, to interleave the writers."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_snapshots_are_oldest_first_under_concurrent_writers(busy_switching: None) -> None:
    metrics.reset()
    start = threading.Barrier(8)

    def write(thread: int) -> None:
        start.wait()
        for i in range(1500):
            metrics.record_operation_failure(f"order-{thread}", f"Error{i % 3}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    events = metrics.get_snapshots(limit=1000)
    times = [event["monotonic"] for event in events]
    assert len(events) == 1000
    assert times == sorted(times)
    metrics.reset()

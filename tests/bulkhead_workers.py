"""What the child processes of the shared-bulkhead tests run (importable by spawn)."""

from __future__ import annotations

import time
from typing import Any

from peak_resilience.resilience import Bulkhead


def bulkhead(name: str, cap: int, shared_dir: str) -> Bulkhead:
    return Bulkhead(cap, name=name, backend="shared", shared_dir=shared_dir)


def take_one_and_hold(
    name: str, cap: int, shared_dir: str, start: Any, done: Any, results: Any
) -> None:
    """Tries once for a slot when every process is ready, reports whether it got one,
    and holds it until ``done`` is set."""
    own = bulkhead(name, cap, shared_dir)
    start.wait(60)
    taken = own.try_acquire()
    results.put(taken)
    done.wait(60)
    if taken:
        own.release()


def take_all_and_hang(name: str, cap: int, shared_dir: str, holding: Any) -> None:
    """Takes every slot, says so, and hangs until it is killed."""
    own = bulkhead(name, cap, shared_dir)
    for _ in range(cap):
        assert own.try_acquire()
    holding.set()
    time.sleep(600)

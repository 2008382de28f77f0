"""Running backend workers in child processes, bounded in time."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

#: Spawned children import only what they need; nothing leaks from the parent's state.
CONTEXT = multiprocessing.get_context("spawn")
DEADLINE = 60.0


def run_all(
    target: Callable[..., None], argument_lists: list[tuple[Any, ...]], start: Any = None
) -> list[Any]:
    """Runs target(*args, results) in one process per entry; returns their reports.

    `start` (a Barrier for every child and this process) is passed once every child has
    built its limiter, so that they race each other rather than run one after the other.
    """
    results = CONTEXT.Queue()
    processes = [
        CONTEXT.Process(target=target, args=(*args, results), daemon=True)
        for args in argument_lists
    ]
    for p in processes:
        p.start()
    if start is not None:
        start.wait(DEADLINE)
    try:
        reports = [results.get(timeout=DEADLINE) for _ in processes]
    finally:
        for p in processes:
            p.join(timeout=DEADLINE)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return reports

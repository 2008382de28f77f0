"""What the DEBUG rejection log adds to a refused call (issue 19).

    python benches/rejection_log.py [calls]

A call refused by an open breaker, through ``with_resilience`` and through
``@breaker.call``: with DEBUG off (refusals never reach Python), and with DEBUG on and a
handler writing to memory, as an application logging to a file would. Past
``REFUSAL_LINES_PER_SECOND`` lines a second per name, refusals are counted rather than
logged, so the storm measured here is what a refusal costs while a breaker is open
under load. Printed: ns per refusal and the ratio on/off (1.0: the log costs nothing).
"""

from __future__ import annotations

import io
import logging
import sys
import timeit
from collections.abc import Callable
from typing import Any

from peak_resilience.errors import CircuitBreakerError
from peak_resilience.resilience import CircuitBreaker
from peak_resilience.resilience_helpers import create_module_circuit_breaker, with_resilience


def refusing(call: Callable[[], Any]) -> Callable[[], None]:
    def once() -> None:
        # try/except, not contextlib.suppress: the context manager would be timed too.
        try:  # noqa: SIM105
            call()
        except CircuitBreakerError:
            pass

    return once


def ns_per_call(call: Callable[[], None], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9


def main(number: int) -> None:
    decorated = with_resilience("bench", "refused")(lambda: 1)
    create_module_circuit_breaker("bench", "refused").force_open()
    breaker = CircuitBreaker(name="bench.own")
    breaker.force_open()
    cases = {
        "with_resilience, breaker open": refusing(decorated),
        "@breaker.call, breaker open": refusing(breaker.call(lambda: 1)),
    }
    package = logging.getLogger("peak_resilience")
    print(f"{'refused call':<32} {'DEBUG off':>10} {'DEBUG on':>10}   on/off")
    for label, call in cases.items():
        off = ns_per_call(call, number)
        handler = logging.StreamHandler(io.StringIO())
        package.addHandler(handler)
        level = package.level
        package.setLevel(logging.DEBUG)
        try:
            on = ns_per_call(call, number)
        finally:
            package.setLevel(level)
            package.removeHandler(handler)
        print(f"{label:<32} {off:8.0f}ns {on:8.0f}ns   {on / off:5.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)

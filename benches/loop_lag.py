"""The event loop while 1,000 tasks wait for tokens at the limit, beside aiolimiter.

    python benches/loop_lag.py [tasks]

A 1 ms ticker runs on the same loop; a wait that sleeps the thread instead of awaiting
shows as a gap as long as the wait. Each limiter admits 1,000 a second with a burst of
one, so every task but the first waits. Printed per limiter: the ticker's largest gap
and its p99, the rate achieved (1,000/s is exact) and, for ours, attempts per admitted
call (each refused attempt is counted by the limiter).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loop_lag import p99, while_ticking

from peak_resilience import RateLimiter
from peak_resilience.config import configure
from peak_resilience.resilience_helpers import get_all_rate_limiters, with_resilience
from peak_resilience.testing import fresh_resilience

RATE = 1_000  # per second, burst 1


async def _measure(tasks: int, one: Callable[[], Awaitable[Any]]) -> tuple[list[float], float]:
    async def everyone() -> None:
        await asyncio.gather(*(one() for _ in range(tasks)))

    _, gaps, taken = await while_ticking(everyone)
    return gaps, taken


def _row(name: str, tasks: int, gaps: list[float], taken: float, attempts: str) -> None:
    print(
        f"{name:34s} max gap {max(gaps) * 1e3:7.2f} ms  p99 {p99(gaps) * 1e3:5.2f} ms  "
        f"rate {(tasks - 1) / taken:7.1f}/s  attempts/call {attempts}"
    )


def _attempts(limiter: Any, tasks: int) -> str:
    return f"{limiter.get_stats()['total_requests'] / tasks:.2f}"


def acquire_async(tasks: int) -> None:
    limiter = RateLimiter(RATE, 1.0, burst=1)
    gaps, taken = asyncio.run(_measure(tasks, lambda: limiter.acquire_async(timeout=60)))
    _row("peak-resilience acquire_async", tasks, gaps, taken, _attempts(limiter, tasks))


def max_wait(tasks: int) -> None:
    with tempfile.TemporaryDirectory() as folder, fresh_resilience():
        config = Path(folder) / "config.toml"
        config.write_text(
            f"[resilience.feed]\nrate_limit_requests = {RATE}\nrate_limit_window = 1\n"
            "rate_limit_burst = 1\n"
        )
        configure(config, environ={})

        @with_resilience("feed", "ticker", use_rate_limiter=True, max_wait=60)
        async def ticker() -> None:
            return None

        gaps, taken = asyncio.run(_measure(tasks, ticker))
        (limiter,) = get_all_rate_limiters().values()
        _row("peak-resilience with_resilience", tasks, gaps, taken, _attempts(limiter, tasks))


def aiolimiter(tasks: int) -> None:
    try:
        from aiolimiter import AsyncLimiter
    except ImportError:
        print("aiolimiter not installed (pip install aiolimiter)")
        return

    async def run() -> tuple[list[float], float]:
        limiter = AsyncLimiter(1, 1 / RATE)

        async def one() -> None:
            async with limiter:
                pass

        return await _measure(tasks, one)

    gaps, taken = asyncio.run(run())
    _row("aiolimiter AsyncLimiter", tasks, gaps, taken, "-")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    for bench in (acquire_async, max_wait, aiolimiter):
        bench(count)

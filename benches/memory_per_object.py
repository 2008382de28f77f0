"""Resident bytes per object (issue 19), each kind in a fresh process.

    python benches/memory_per_object.py [count]

Makes ``count`` (default 100,000) objects of one kind, held in a list, and divides what
the process grew by ``count``: RSS (the Rust side and Python's together) and, beside it,
what tracemalloc saw Python allocate. Kinds: a breaker; a breaker and a function guarded
by it (``breaker.call``); a rate limiter; an endpoint added to one limiter. Each is
printed beside issue 19's target.
"""

from __future__ import annotations

import subprocess
import sys

#: kind -> (set-up, the statement making object i, the target in bytes)
KINDS = {
    "breaker": (
        "from peak_resilience.resilience import CircuitBreaker",
        "CircuitBreaker(name=f'b{i}')",
        600,
    ),
    "breaker + guard": (
        "from peak_resilience.resilience import CircuitBreaker\ndef f(): pass",
        "CircuitBreaker(name=f'b{i}').call(f)",
        900,
    ),
    "limiter": (
        "from peak_resilience.rate_limiter import RateLimiter",
        "RateLimiter(10, 1.0, name=f'l{i}')",
        500,
    ),
    "endpoint": (
        "from peak_resilience.rate_limiter import RateLimiter\nlimiter = RateLimiter(10, 1.0)",
        "limiter.add_endpoint(f'e{i}', 5, 1.0)",
        250,
    ),
}

MEASURE = """
import gc, json, os, sys, tracemalloc
{setup}
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE
count = {count}
warm = [{make} for i in range(100)]  # first-use costs (caches, pools) not counted
del warm
gc.collect()
if {traced}:
    tracemalloc.start()
before = tracemalloc.get_traced_memory()[0] if {traced} else rss()
kept = [{make} for i in range(count)]
gc.collect()
after = tracemalloc.get_traced_memory()[0] if {traced} else rss()
print((after - before - sys.getsizeof(kept)) / count)
"""


def measure(kind: str, count: int, *, traced: bool) -> float:
    """Bytes per object: RSS, or (``traced``) what tracemalloc saw Python allocate (a
    separate run: tracing adds its own bytes to RSS)."""
    setup, make, _target = KINDS[kind]
    code = MEASURE.format(setup=setup, make=make, count=count, traced=traced)
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(ran.stdout.splitlines()[-1])


def main(count: int) -> None:
    print(f"{'object':<18} {'RSS B':>8} {'Python B':>9} {'target':>7}")
    for kind, (_setup, _make, target) in KINDS.items():
        rss = measure(kind, count, traced=False)
        python = measure(kind, count, traced=True)
        mark = "yes" if rss <= target else "NO"
        print(f"{kind:<18} {rss:8.0f} {python:9.0f} {target:7d}  {mark}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)

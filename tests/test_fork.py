"""os.fork() after limiters exist: an in-process limiter is copied into the child with the
tokens it had at the fork, and from then on the two budgets are independent (use the shared
backend for one budget across processes)."""

from __future__ import annotations

import os

import pytest

from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_copy_of_the_in_process_budget() -> None:
    limiter = RateLimiter(10, 3600)
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=3600)
    for _ in range(4):
        limiter.acquire()
    breaker.open_for(3600)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running pytest's exit
        try:
            admitted = sum(limiter.acquire() for _ in range(20))
            os.write(write, f"{admitted} {int(breaker.state)}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_admitted, child_state = (int(x) for x in pipe.read().split())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_admitted == 6, "the child starts from the parent's 6 remaining tokens"
    assert child_state == CircuitState.OPEN
    # The parent's budget is untouched by what the child spent.
    assert sum(limiter.acquire() for _ in range(20)) == 6

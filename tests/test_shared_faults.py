"""The shared-memory backend under faults from outside the library: the file deleted or
truncated under a running process, and ``os.fork()`` after shared limiters exist (the
child keeps drawing on the one budget, unlike an in-process limiter's copy)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peak_resilience import CircuitBreaker, CircuitState, RateLimiter


@pytest.fixture
def shared_dir(tmp_path: Path) -> str:
    return str(tmp_path / "shm")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_on_the_same_shared_budget_and_breaker(shared_dir: str) -> None:
    limiter = RateLimiter(10, 3600, name="binance", backend="shared", shared_dir=shared_dir)
    breaker = CircuitBreaker(1, 3600, name="binance", backend="shared", shared_dir=shared_dir)
    for _ in range(4):
        assert limiter.acquire()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: spend three tokens, open the breaker, leave without pytest
        try:
            admitted = sum(limiter.acquire() for _ in range(3))
            breaker.record_failure()
            os.write(write, str(admitted).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_admitted = int(pipe.read())
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert child_admitted == 3
    # What the child spent is gone from the parent's budget too: 10 - 4 - 3 left.
    assert sum(limiter.acquire() for _ in range(20)) == 3
    assert breaker.state is CircuitState.OPEN


def test_a_shared_file_deleted_under_a_running_process_does_not_crash_it(
    shared_dir: str,
) -> None:
    limiter = RateLimiter(3, 3600, name="binance", backend="shared", shared_dir=shared_dir)
    breaker = CircuitBreaker(3, 60, name="exchange", backend="shared", shared_dir=shared_dir)
    assert limiter.acquire()
    limiter_path, breaker_path = limiter.default_bucket.shared_path, breaker.shared_path
    assert limiter_path is not None and breaker_path is not None

    limiter_path.unlink()
    breaker_path.unlink()

    # The mapping outlives the name: this process goes on with the budget it had.
    assert [limiter.acquire(), limiter.acquire(), limiter.acquire()] == [True, True, False]
    assert breaker.allow()


TRUNCATE = textwrap.dedent(
    """
    import os, sys
    from peak_resilience import CircuitBreaker, RateLimiter
    shared_dir, which = sys.argv[1], sys.argv[2]
    limiter = RateLimiter(3, 3600, name="binance", backend="shared", shared_dir=shared_dir)
    breaker = CircuitBreaker(3, 60, name="exchange", backend="shared", shared_dir=shared_dir)
    path = limiter.default_bucket.shared_path if which == "limiter" else breaker.shared_path
    os.truncate(path, 0)
    try:
        limiter.acquire() if which == "limiter" else breaker.allow()
    except Exception as err:
        print(f"error: {err}")
    else:
        print("answered")
    """
)


@pytest.mark.xfail(
    strict=True,
    reason="issue 5: touching a mapping whose file was truncated kills the process with "
    "SIGBUS; wanted: a clear error naming the file",
)
@pytest.mark.parametrize("which", ["limiter", "breaker"])
def test_a_shared_file_truncated_under_a_running_process_is_a_clear_error_not_a_crash(
    shared_dir: str, which: str
) -> None:
    # In a child process: the crash, if any, must not take pytest with it.
    child = subprocess.run(
        [sys.executable, "-c", TRUNCATE, shared_dir, which],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert child.returncode == 0, f"died with {child.returncode}: {child.stderr[-500:]}"
    assert child.stdout.startswith("error:") and "truncated" in child.stdout

"""The shared-memory backend under faults from outside the library: the file deleted or
truncated under a running process, and ``os.fork()`` after shared limiters exist (the
child keeps drawing on the one budget, unlike an in-process limiter's copy)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from peak_resilience import CircuitBreaker, CircuitState, RateLimiter
from peak_resilience._health import check_resilience


@pytest.fixture
def shared_dir(tmp_path: Path) -> str:
    return str(tmp_path / "shm")


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a child Python with ``args``: a crash, if any, must not take pytest
    with it."""
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )


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


def test_the_resilience_health_check_names_a_shared_file_deleted_or_replaced_under_the_process(
    shared_dir: str,
) -> None:
    limiter = RateLimiter(3, 3600, name="binance", backend="shared", shared_dir=shared_dir)
    limiter.add_endpoint("orders", 5, 1)
    breaker = CircuitBreaker(3, 60, name="exchange", backend="shared", shared_dir=shared_dir)
    orders_path = limiter.endpoint_buckets()["orders"].shared_path
    breaker_path = breaker.shared_path
    assert orders_path is not None and breaker_path is not None
    assert check_resilience()[0]

    # Deleted: a process started now would create a new file and a budget of its own.
    orders_path.unlink()
    healthy, message = check_resilience()
    assert not healthy
    assert str(orders_path) in message and "deleted or replaced" in message
    assert str(breaker_path) not in message

    # Replaced: another file under the same name (here a breaker opened after the unlink).
    breaker_path.unlink()
    later = CircuitBreaker(3, 60, name="exchange", backend="shared", shared_dir=shared_dir)
    assert later.shared_path == breaker_path and breaker_path.exists()
    healthy, message = check_resilience()
    assert not healthy
    assert str(breaker_path) in message and str(orders_path) in message

    del limiter, breaker  # the later breaker's file is its own: nothing left to report
    healthy, message = check_resilience()
    assert healthy, message


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
    # Neither new settings nor a reset revive it as a limiter or breaker of this process alone.
    try:
        if which == "limiter":
            limiter.default_bucket.set_rate(5, 1)
            limiter.acquire()
        else:
            breaker.reset()
    except Exception as err:
        print(f"error: {err}")
    else:
        print("revived")
    from peak_resilience._health import check_resilience
    print(check_resilience())
    """
)


@pytest.mark.parametrize("which", ["limiter", "breaker"])
def test_a_shared_file_truncated_under_a_running_process_is_a_clear_error_not_a_crash(
    shared_dir: str, which: str
) -> None:
    # In a child process: the crash, if any, must not take pytest with it.
    child = run_child(TRUNCATE, shared_dir, which)

    assert child.returncode == 0, f"died with {child.returncode}: {child.stderr[-500:]}"
    error, after_reset, health = child.stdout.splitlines()
    assert error.startswith("error:") and "truncated" in error and str(shared_dir) in error
    assert after_reset == error
    # The resilience health check reports it too.
    assert health.startswith("(False,") and "truncated" in health


STALE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from peak_resilience import RateLimiter

    # What a process of this same pid left when it was killed while creating the file
    # (a container starts its service as the same pid every time).
    shm = Path(sys.argv[1])
    shm.mkdir(parents=True)
    for n in range(64):
        (shm / f".limiter.exchange.default.bucket.{os.getpid()}.{n}.tmp").write_bytes(b"")
    limiter = RateLimiter(2, 60, name="exchange", backend="shared", shared_dir=str(shm))
    print(sum(limiter.acquire() for _ in range(5)))
    """
)


def test_a_temporary_file_left_by_a_killed_process_of_the_same_pid_does_not_block_creation(
    shared_dir: str,
) -> None:
    child = run_child(STALE, shared_dir)
    assert child.returncode == 0, child.stderr[-800:]
    assert child.stdout.split() == ["2"]


FIRST_TOUCH = textwrap.dedent(
    """
    import os, sys
    from peak_resilience import CircuitBreaker, RateLimiter
    shared_dir, which = sys.argv[1], sys.argv[2]
    limiter = RateLimiter(1, 3600, name="binance", backend="shared", shared_dir=shared_dir)
    breaker = CircuitBreaker(1, 3600, name="exchange", backend="shared", shared_dir=shared_dir)
    assert limiter.acquire() and not limiter.acquire()
    breaker.force_open()
    path = limiter.default_bucket.shared_path if which == "limiter" else breaker.shared_path
    os.truncate(path, 0)
    # The update is the first to touch the truncated page.
    try:
        if which == "limiter":
            limiter.default_bucket.set_rate(3, 3600)
        else:
            breaker.reset()
    except Exception as err:
        print(f"error: {err}")
    else:
        print("updated")
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(limiter.acquire() if which == "limiter" else breaker.allow())
        except Exception:
            outcomes.append("error")
    print(outcomes)
    """
)


@pytest.mark.parametrize("which", ["limiter", "breaker"])
def test_an_update_that_first_touches_a_truncated_file_does_not_revive_it(
    shared_dir: str, which: str
) -> None:
    child = run_child(FIRST_TOUCH, shared_dir, which)
    assert child.returncode == 0, f"died with {child.returncode}: {child.stderr[-500:]}"
    update, outcomes = child.stdout.splitlines()
    assert update.startswith("error:") and "truncated" in update
    assert outcomes == "['error', 'error', 'error']"


IGNORED = textwrap.dedent(
    """
    import os, signal, sys
    from peak_resilience import RateLimiter

    signal.signal(signal.SIGBUS, signal.SIG_IGN)
    limiter = RateLimiter(2, 60, name="exchange", backend="shared", shared_dir=sys.argv[1])
    os.kill(os.getpid(), signal.SIGBUS)  # the library's handler is in place by now
    print("alive", limiter.acquire())
    """
)


def test_a_sigbus_sent_by_kill_stays_ignored_once_shared_files_are_mapped(
    shared_dir: str,
) -> None:
    # The SIGBUS handler of the shared backend passes on what is not a fault on its
    # mappings; a process that ignores SIGBUS must not die of one sent by `kill`.
    child = run_child(IGNORED, shared_dir)
    assert child.returncode == 0, f"died with {child.returncode}: {child.stderr[-500:]}"
    assert child.stdout.split() == ["alive", "True"]


RESET_HAND = textwrap.dedent(
    """
    import ctypes, os, signal, sys
    from peak_resilience import RateLimiter

    class SigAction(ctypes.Structure):  # glibc's struct sigaction on Linux
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                    ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

    SA_RESETHAND = 0x80000000
    calls = []
    handler = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda signum: calls.append(signum))
    action = SigAction(ctypes.cast(handler, ctypes.c_void_p), (ctypes.c_ulong * 16)(),
                       ctypes.c_int(SA_RESETHAND - (1 << 32)).value, None)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.sigaction(signal.SIGBUS, ctypes.byref(action), None) == 0
    limiter = RateLimiter(2, 60, name="exchange", backend="shared", shared_dir=sys.argv[1])
    os.kill(os.getpid(), signal.SIGBUS)  # to the one-shot handler, through the library's
    print("calls", len(calls), flush=True)
    os.kill(os.getpid(), signal.SIGBUS)  # the one shot is spent: the default action
    print("calls", len(calls), flush=True)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's struct sigaction")
def test_a_one_shot_sigbus_handler_installed_before_shared_files_runs_once_then_the_default(
    shared_dir: str,
) -> None:
    child = run_child(RESET_HAND, shared_dir)
    assert child.stdout.splitlines() == ["calls 1"], child.stderr[-500:]
    assert child.returncode == -signal.SIGBUS


TRUNCATED_BULKHEAD = textwrap.dedent(
    """
    import os, sys
    from peak_resilience.resilience import Bulkhead
    bulkhead = Bulkhead(2, name="orders", backend="shared", shared_dir=sys.argv[1])
    os.truncate(bulkhead.shared_path, 0)
    for attempt in range(2):
        try:
            with bulkhead:
                print("ran")
        except Exception as err:
            print(f"{type(err).__name__}: {err}")
    """
)


def test_a_shared_bulkhead_truncated_under_a_running_process_names_its_file(
    shared_dir: str,
) -> None:
    child = run_child(TRUNCATED_BULKHEAD, shared_dir)
    assert child.returncode == 0, f"died with {child.returncode}: {child.stderr[-500:]}"
    lines = child.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines
    assert lines[0].startswith("OSError: shared file ") and "truncated" in lines[0]
    assert "bulkhead" in lines[0] and shared_dir in lines[0]

"""backend="shared": one budget and one breaker for every process of the host."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import backend_workers as workers
import pytest
from multiprocessing_helpers import CONTEXT, DEADLINE, run_all

from peak_resilience import CircuitBreaker, CircuitState, RateLimiter
from peak_resilience._modules.build import make_circuit_breaker, make_rate_limiter
from peak_resilience.testing import ManualClock


@pytest.fixture
def shared(tmp_path: Path) -> dict[str, Any]:
    return {"backend": "shared", "shared_dir": str(tmp_path / "shm")}


# One process, two objects ----------------------------------------------------------


def test_two_limiters_of_one_name_draw_on_one_budget(shared: dict[str, Any]) -> None:
    first = RateLimiter(3, 3600, name="binance", **shared)
    second = RateLimiter(3, 3600, name="binance", **shared)
    taken = [first.acquire(), second.acquire(), first.acquire(), second.acquire()]
    assert taken == [True, True, True, False]
    assert first.get_stats()["allowed"] == 3
    assert second.get_stats()["rejected"] == 1


def test_limiters_of_different_names_have_their_own_budgets(shared: dict[str, Any]) -> None:
    binance = RateLimiter(1, 3600, name="binance", **shared)
    kraken = RateLimiter(1, 3600, name="kraken", **shared)
    assert binance.acquire() and kraken.acquire()


def test_an_added_endpoint_is_shared_and_stands_on_its_own(shared: dict[str, Any]) -> None:
    first = RateLimiter(1, 3600, name="binance", **shared)
    second = RateLimiter(1, 3600, name="binance", **shared)
    first.add_endpoint("fetch_ticker", 2, 3600)
    second.add_endpoint("fetch_ticker", 2, 3600)
    assert first.acquire()
    assert [first.acquire("fetch_ticker"), second.acquire("fetch_ticker")] == [True, True]
    assert not second.acquire("fetch_ticker")
    assert not second.acquire()


def test_a_shared_budget_refills_on_the_clock(shared: dict[str, Any], clock: ManualClock) -> None:
    first = RateLimiter(2, 10, name="binance", clock=clock, **shared)
    second = RateLimiter(2, 10, name="binance", clock=clock, **shared)
    assert first.acquire(cost=2)
    assert not second.acquire()
    assert second.get_wait_time() == pytest.approx(5.0)
    clock.advance(5)
    assert second.acquire()


def test_the_file_is_created_0600_in_a_0700_directory_named_after_the_limiter(
    shared: dict[str, Any],
) -> None:
    limiter = RateLimiter(3, 60, name="binance spot", **shared)
    path = limiter.default_bucket.shared_path
    assert path is not None
    assert path.parent == Path(shared["shared_dir"])
    assert "binance%20spot" in path.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_default_directory_is_per_user_under_dev_shm() -> None:
    limiter = RateLimiter(3, 60, name=f"default-dir-test-{os.getpid()}", backend="shared")
    path = limiter.default_bucket.shared_path
    assert path is not None
    try:
        assert path.parent.name == f"peak-resilience-{os.geteuid()}"
        if Path("/dev/shm").is_dir():
            assert path.parent.parent == Path("/dev/shm")
    finally:
        path.unlink()


def test_a_process_asking_for_another_rate_gets_an_error_naming_the_file(
    shared: dict[str, Any],
) -> None:
    RateLimiter(100, 60, name="binance", **shared)
    with pytest.raises(ValueError, match=r"limiter\.binance\.default\.bucket.*same settings"):
        RateLimiter(50, 60, name="binance", **shared)


def test_a_rate_changed_in_place_is_the_one_later_processes_must_use(
    shared: dict[str, Any],
) -> None:
    limiter = RateLimiter(100, 60, name="binance", **shared)
    limiter.default_bucket.set_rate(50, 60)
    later = RateLimiter(50, 60, name="binance", **shared)
    assert later.default_bucket.capacity == 50


def test_a_corrupt_file_is_a_clear_error(shared: dict[str, Any]) -> None:
    limiter = RateLimiter(3, 60, name="binance", **shared)
    path = limiter.default_bucket.shared_path
    assert path is not None
    path.write_bytes(b"not a bucket")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        RateLimiter(3, 60, name="binance", **shared)


def test_a_file_of_another_user_is_refused(shared: dict[str, Any]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a file to another user")
    limiter = RateLimiter(3, 60, name="binance", **shared)
    path = limiter.default_bucket.shared_path
    assert path is not None
    os.chown(path, 12345, 12345)
    with pytest.raises(PermissionError, match="belongs to uid 12345"):
        RateLimiter(3, 60, name="binance", **shared)


def test_a_shared_limiter_needs_a_name(shared: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        RateLimiter(3, 60, **shared)


def test_an_unknown_backend_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="backend must be one of 'memory', 'shared', 'redis'"):
        RateLimiter(3, 60, name="x", backend="sqlite")  # type: ignore[arg-type]


def test_a_shared_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(OSError, match="shared_dir"):
        RateLimiter(3, 60, name="x", backend="shared", shared_dir=not_a_dir)


def test_two_breakers_of_one_name_share_the_circuit(
    shared: dict[str, Any], clock: ManualClock
) -> None:
    first = CircuitBreaker(2, 30, "exchange", clock=clock, **shared)
    second = CircuitBreaker(2, 30, "exchange", clock=clock, **shared)
    first.record_failure()
    second.record_failure()
    assert first.state is CircuitState.OPEN
    assert second.state is CircuitState.OPEN
    assert second.failure_total == 2
    clock.advance(30)
    assert first.state is CircuitState.HALF_OPEN
    assert second.allow()  # the trial permit, taken through the other opening
    assert not first.allow()
    second.record_success()
    assert first.state is CircuitState.CLOSED


def test_a_breaker_with_other_settings_is_refused(shared: dict[str, Any]) -> None:
    CircuitBreaker(5, 60, "exchange", **shared)
    with pytest.raises(ValueError, match=r"failure_threshold = 5.*asks for 3"):
        CircuitBreaker(3, 60, "exchange", **shared)


def test_the_factories_build_shared_objects(shared: dict[str, Any]) -> None:
    limiter = make_rate_limiter(5, 1.0, name="factory", **shared)
    breaker = make_circuit_breaker(3, 10.0, "factory", **shared)
    assert limiter.backend == "shared" and limiter.default_bucket.shared_path is not None
    assert breaker.backend == "shared" and breaker.shared_path is not None


def test_a_memory_limiter_has_no_shared_file() -> None:
    assert RateLimiter(3, 60).default_bucket.shared_path is None


# Many processes ----------------------------------------------------------------------


def test_four_processes_admit_exactly_the_budget_between_them(shared: dict[str, Any]) -> None:
    budget = 500
    start = CONTEXT.Barrier(5)
    args = [("pool", budget, shared, start, budget) for _ in range(4)]
    reports = run_all(workers.take_all, args, start)
    assert sum(reports) == budget


def test_processes_creating_the_file_at_the_same_instant_share_one_budget(
    shared: dict[str, Any],
) -> None:
    budget = 100
    start = CONTEXT.Barrier(7)
    reports = run_all(workers.create_and_take, [("race", budget, shared, start, budget)] * 6, start)
    assert sum(reports) == budget
    assert sorted(p.name for p in Path(shared["shared_dir"]).iterdir()) == [
        "limiter.race.default.bucket"
    ]


def test_a_breaker_opened_by_one_process_is_open_in_all(shared: dict[str, Any]) -> None:
    assert run_all(workers.fail_until_open, [("exchange", shared)]) == ["OPEN"]
    reports = run_all(workers.report_breaker, [("exchange", shared)] * 3)
    assert reports == [("OPEN", False)] * 3
    assert workers.breaker("exchange", shared).state is CircuitState.OPEN


def test_a_process_killed_mid_run_takes_nothing_from_the_others(shared: dict[str, Any]) -> None:
    budget = 300_000
    victim = CONTEXT.Process(target=workers.spend_forever, args=("pool", budget, shared))
    victim.start()
    watcher = workers.limiter("pool", budget, shared)
    deadline = time.monotonic() + DEADLINE
    while watcher.get_stats()["allowed"] < 1000 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    victim.join(timeout=DEADLINE)
    assert victim.exitcode == -signal.SIGKILL
    # What the victim spent is what the bucket no longer holds. Its `allowed` counter is a
    # separate atomic: a kill between taking a token and counting it leaves the counter
    # one short, never the budget.
    stats = watcher.get_stats()
    spent = budget - int(stats["tokens_available"])
    assert 1000 <= spent < budget
    assert spent - 1 <= stats["allowed"] <= spent
    reports = run_all(workers.drain, [("pool", budget, shared)] * 3)
    assert sum(reports) == budget - spent


def test_a_bare_token_bucket_can_live_in_a_shared_file(tmp_path: Path) -> None:
    from peak_resilience.rate_limiter import TokenBucket

    path = tmp_path / "orders.bucket"
    first = TokenBucket(2, 3600, shared=path)
    second = TokenBucket(2, 3600, shared=str(path))
    assert [first.acquire(), second.acquire(), first.acquire()] == [True, True, False]
    assert first.shared_path == path


def test_a_shared_path_of_the_wrong_type_is_named_in_the_error() -> None:
    from peak_resilience.rate_limiter import TokenBucket

    with pytest.raises(TypeError, match="shared must be the path"):
        TokenBucket(2, 3600, shared=42)  # type: ignore[arg-type]


def test_a_process_killed_holding_the_trial_does_not_wedge_the_breaker(
    shared: dict[str, Any],
) -> None:
    recovery = 1.0  # long beside killing a process, so the dead trial is seen still out
    others = CircuitBreaker(1, recovery, "exchange", **shared)
    others.record_failure()
    holding = CONTEXT.Event()
    victim = CONTEXT.Process(
        target=workers.take_trial_and_hang, args=("exchange", recovery, shared, holding)
    )
    victim.start()
    assert holding.wait(DEADLINE)
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    victim.join(timeout=DEADLINE)
    assert not others.allow()  # the dead process's trial is still out
    time.sleep(recovery)
    assert others.allow()  # presumed lost after recovery_timeout: a new trial
    others.record_success()
    assert others.state is CircuitState.CLOSED


def test_two_objects_on_one_shared_file_are_exported_once(shared: dict[str, Any]) -> None:
    from peak_resilience.metrics import metrics

    first = RateLimiter(5, 3600, name="exported-once", **shared)
    second = RateLimiter(5, 3600, name="exported-once", **shared)
    breaker_a = CircuitBreaker(5, 60, "exported-once", **shared)
    breaker_b = CircuitBreaker(5, 60, "exported-once", **shared)
    first.acquire()
    second.acquire()
    breaker_a.record_failure()
    summary = metrics.get_summary()
    assert summary["rate_limiters"]["exported-once"]["default"]["requests"] == 2
    assert summary["circuit_breakers"]["exported-once"]["failures"] == 1
    assert breaker_b.failure_total == 1


def test_a_shared_dir_writable_by_others_is_refused_by_name(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(PermissionError, match=rf"shared_dir '{open_dir}' is writable by its group"):
        RateLimiter(3, 60, name="x", backend="shared", shared_dir=open_dir)
    open_dir.chmod(0o770)
    with pytest.raises(PermissionError, match="mode 770"):
        CircuitBreaker(3, 60.0, "x", backend="shared", shared_dir=open_dir)


@pytest.mark.without_shared_backend
def test_a_build_without_the_shared_backend_refuses_it_naming_the_alternatives(
    tmp_path: Path,
) -> None:
    # Windows, and the portable core CI builds on Linux (scripts/test-portable).
    for make in (
        lambda: RateLimiter(3, 60, name="x", backend="shared", shared_dir=tmp_path),
        lambda: CircuitBreaker(3, 60.0, "x", backend="shared", shared_dir=tmp_path),
    ):
        with pytest.raises(ValueError, match=r"backend='memory'.*or backend='redis'"):
            make()
    assert RateLimiter(3, 60, name="x").acquire()  # memory stays available


def test_a_process_in_a_time_namespace_reads_the_shared_budget_and_circuit_as_the_host_does(
    shared: dict[str, Any],
) -> None:
    # A container in a time namespace reads CLOCK_MONOTONIC an hour ahead of the host. The
    # shared file holds absolute instants: unless the offset is taken out, that process sees
    # the bucket refilled and the circuit due for a trial.
    import json
    import shutil
    import subprocess
    import sys

    unshare = shutil.which("unshare")
    probe = (
        subprocess.run(
            [unshare or "unshare", "--time", "--monotonic", "3600", "true"], capture_output=True
        )
        if unshare
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("no time namespaces here (unshare --time needs CAP_SYS_ADMIN, Linux 5.6+)")
    limiter = RateLimiter(2, 3600, name="namespaced", **shared)
    assert [limiter.acquire(), limiter.acquire()] == [True, True]
    breaker = CircuitBreaker(1, 600.0, "namespaced", **shared)
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    child = f"""
import json
from pathlib import Path
from peak_resilience import CircuitBreaker, RateLimiter
shared = {shared!r}
limiter = RateLimiter(2, 3600, name="namespaced", **shared)
breaker = CircuitBreaker(1, 600.0, "namespaced", **shared)
offsets = Path("/proc/self/timens_offsets").read_text().split()
print(json.dumps([offsets[offsets.index("monotonic") + 1], limiter.acquire(), breaker.state.name]))
"""
    ran = subprocess.run(
        [unshare, "--time", "--monotonic", "3600", sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == ["3600", False, "OPEN"]

"""Bulkhead(backend="shared"): one cap for every process of the host, and the slots of a
process that died taken back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import bulkhead_workers as workers
import pytest
from multiprocessing_helpers import CONTEXT, DEADLINE

from peak_resilience.errors import BulkheadFull
from peak_resilience.resilience import Bulkhead
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock

pytestmark = pytest.mark.shared_backend


def test_two_bulkheads_of_one_name_share_the_slots(tmp_path: Path) -> None:
    first = Bulkhead(2, name="orders", backend="shared", shared_dir=tmp_path)
    second = Bulkhead(2, name="orders", backend="shared", shared_dir=tmp_path)
    taken = [first.try_acquire(), second.try_acquire(), first.try_acquire()]
    assert taken == [True, True, False]
    assert (first.in_flight, second.in_flight) == (2, 2)
    second.release()
    assert first.try_acquire()


def test_two_objects_of_one_shared_bulkhead_export_the_hosts_calls_in_flight_once(
    tmp_path: Path,
) -> None:
    from metric_samples import ours

    first = Bulkhead(3, name="exported-once", backend="shared", shared_dir=tmp_path)
    second = Bulkhead(3, name="exported-once", backend="shared", shared_dir=tmp_path)
    assert first.try_acquire() and second.try_acquire()
    exported = ours()
    assert exported[("peak_trade_bulkhead_in_flight", frozenset({("name", "exported-once")}))] == 2
    first.release()
    second.release()


def test_the_cap_holds_across_processes(tmp_path: Path) -> None:
    start, done, results = CONTEXT.Barrier(5), CONTEXT.Event(), CONTEXT.Queue()
    children = [
        CONTEXT.Process(
            target=workers.take_one_and_hold,
            args=("orders", 2, str(tmp_path), start, done, results),
            daemon=True,
        )
        for _ in range(4)
    ]
    for child in children:
        child.start()
    try:
        start.wait(DEADLINE)
        taken = [results.get(timeout=DEADLINE) for _ in children]
        here = Bulkhead(2, name="orders", backend="shared", shared_dir=tmp_path)
        assert sorted(taken) == [False, False, True, True]
        assert here.in_flight == 2 and not here.try_acquire()
    finally:
        done.set()
        for child in children:
            child.join(DEADLINE)
    assert [child.exitcode for child in children] == [0] * 4
    assert here.in_flight == 0


def test_the_slots_of_a_process_killed_while_holding_them_are_taken_back(
    tmp_path: Path,
) -> None:
    holding = CONTEXT.Event()
    victim = CONTEXT.Process(
        target=workers.take_all_and_hang, args=("orders", 2, str(tmp_path), holding)
    )
    victim.start()
    assert holding.wait(DEADLINE)
    here = Bulkhead(2, name="orders", backend="shared", shared_dir=tmp_path)
    assert not here.try_acquire()  # the victim is alive: its slots are its own

    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    victim.join(DEADLINE)
    assert victim.exitcode == -signal.SIGKILL
    time.sleep(0.005)  # past the interval between two looks for dead owners

    assert here.try_acquire() and here.try_acquire()
    assert not here.try_acquire()
    assert here.in_flight == 2


def test_a_process_asking_for_another_cap_is_refused_naming_it(tmp_path: Path) -> None:
    Bulkhead(2, name="orders", backend="shared", shared_dir=tmp_path)
    with pytest.raises(ValueError, match="max_concurrent = 2, but this process asks for 3"):
        Bulkhead(3, name="orders", backend="shared", shared_dir=tmp_path)


def test_a_cap_past_the_shared_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 1024 on the shared backend"):
        Bulkhead(1025, name="wide", backend="shared")


def test_a_bulkhead_on_redis_is_refused_naming_the_backends() -> None:
    with pytest.raises(ValueError, match="'memory' or 'shared', got 'redis'"):
        Bulkhead(2, name="orders", backend="redis")  # type: ignore[arg-type]


def test_the_bulkhead_backend_key_shares_an_operations_cap_across_processes(
    fresh: ManualClock, write_config: Any, tmp_path: Path
) -> None:
    from peak_resilience.config import configure

    configure(
        write_config(
            f'[resilience.exchange]\nmax_concurrent = 1\nbulkhead_backend = "shared"\n'
            f'shared_dir = "{tmp_path}"\n'
        )
    )
    other_process = Bulkhead(1, name="exchange.cancel", backend="shared", shared_dir=tmp_path)
    cancel = with_resilience("exchange", "cancel")(lambda: "cancelled")
    assert other_process.try_acquire()
    with pytest.raises(BulkheadFull):
        cancel()
    other_process.release()
    assert cancel() == "cancelled"


def test_a_reload_that_moves_a_bulkhead_to_shared_memory_is_refused_naming_the_key(
    fresh: ManualClock, write_config: Any, tmp_path: Path
) -> None:
    from peak_resilience.config import ConfigError, configure

    configure(write_config("[resilience.exchange]\nmax_concurrent = 1\n"))
    with_resilience("exchange", "cancel")(lambda: "cancelled")
    moved = write_config(
        f'[resilience.exchange]\nmax_concurrent = 1\nbulkhead_backend = "shared"\n'
        f'shared_dir = "{tmp_path}"\n',
        name="moved.toml",
    )
    with pytest.raises(ConfigError, match="cannot move them to 'shared'") as refused:
        configure(moved)
    assert refused.value.key == "bulkhead_backend"


def test_a_forked_child_holds_slots_of_its_own_taken_back_when_it_dies(tmp_path: Path) -> None:
    here = Bulkhead(2, name="orders", backend="shared", shared_dir=tmp_path)
    assert here.try_acquire()
    child = os.fork()
    if child == 0:  # the child: takes the last slot and dies without giving it back
        os._exit(0 if here.try_acquire() else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    time.sleep(0.005)  # past the interval between two looks for dead owners

    # The child's slot was its own, not this process's: taken back, while ours stays.
    assert here.try_acquire()
    assert not here.try_acquire()
    here.release()
    here.release()
    assert here.in_flight == 0

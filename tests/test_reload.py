"""A reload (a second ``configure()``) is checked whole, file and environment, before
anything changes, then applied whole; what it cannot apply in place is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience.config import ConfigError, active, configure, load_config
from peak_resilience.resilience_helpers import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
)
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]


def test_a_reload_that_moves_a_limiter_to_shared_memory_is_refused_and_changes_nothing(
    fresh: ManualClock, write_config: WriteConfig, tmp_path: Path
) -> None:
    first = configure(write_config("[resilience]\ncircuit_breaker_threshold = 5\n"))
    limiter = create_module_rate_limiter("live")
    breaker = create_module_circuit_breaker("live", "orders")

    moved = write_config(
        "[resilience]\ncircuit_breaker_threshold = 9\n"
        f'[resilience.live]\nrate_limit_backend = "shared"\nshared_dir = "{tmp_path}"\n',
        name="moved.toml",
    )
    with pytest.raises(ConfigError) as refused:
        configure(moved)

    assert refused.value.key == "rate_limit_backend"
    assert "'memory'" in refused.value.problem and "'shared'" in refused.value.problem
    assert "restart" in refused.value.problem
    assert limiter.backend == "memory"
    assert breaker.failure_threshold == 5  # not half-applied
    assert active() is first


def test_a_reload_that_moves_a_shared_breaker_to_another_directory_is_refused(
    fresh: ManualClock, write_config: WriteConfig, tmp_path: Path
) -> None:
    table = '[resilience.live]\ncircuit_breaker_backend = "shared"\nshared_dir = "{}"\n'
    configure(write_config(table.format(tmp_path / "a")))
    breaker = create_module_circuit_breaker("live", "orders")

    with pytest.raises(ConfigError, match="shared_dir") as refused:
        configure(write_config(table.format(tmp_path / "b"), name="b.toml"))

    assert refused.value.table == "resilience.live"
    assert breaker.shared_path is not None and breaker.shared_path.parent == tmp_path / "a"


@pytest.mark.shared_backend
def test_a_reload_that_keeps_the_backend_still_applies_everything_else(
    fresh: ManualClock, write_config: WriteConfig, tmp_path: Path
) -> None:
    table = '[resilience.live]\nrate_limit_backend = "shared"\nshared_dir = "{}"\n'
    configure(write_config(table.format(tmp_path)))
    limiter = create_module_rate_limiter("live")

    configure(write_config(table.format(tmp_path) + "rate_limit_requests = 7\n", name="b.toml"))

    assert [w[:2] for w in limiter.default_bucket.windows] == [(7, 60.0)]


def test_a_variable_that_makes_a_reload_invalid_is_named_and_nothing_changes(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience]\ncircuit_breaker_threshold = 5\n"))
    breaker = create_module_circuit_breaker("backtest", "fetch")
    create_module_rate_limiter("live")

    with pytest.raises(ConfigError) as refused:
        configure(
            write_config("[resilience]\ncircuit_breaker_threshold = 9\n", name="b.toml"),
            environ={"PEAK_TRADE_LIVE__RATE_LIMIT_RESERVE": "100"},  # the whole bucket
        )

    assert refused.value.source == "environment PEAK_TRADE_LIVE__RATE_LIMIT_RESERVE"
    assert refused.value.key == "rate_limit_reserve"
    assert breaker.failure_threshold == 5


def test_a_module_known_only_from_the_environment_is_checked_at_load(fresh: ManualClock) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(environ={"PEAK_TRADE_LIVE__RATE_LIMIT_RESERVE": "100"})

    assert refused.value.source == "environment PEAK_TRADE_LIVE__RATE_LIMIT_RESERVE"
    assert refused.value.table == "resilience.live"

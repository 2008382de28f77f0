"""Environment variables that miss: a typo of PEAK_TRADE_CONFIG or of a module variable
is refused with the variable that was meant, never silently ignored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience.config import ConfigError, load_config
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]


@pytest.mark.parametrize(
    "variable", ["PEAK_TRADE_CONFG", "PEAK_TRADE_CONFIG_FILE", "PEAK_TRADE_CONFIG_PATH"]
)
def test_a_typo_of_the_config_file_variable_is_refused_with_the_right_name(
    fresh: ManualClock, write_config: WriteConfig, variable: str
) -> None:
    path = write_config("[resilience]\ncircuit_breaker_threshold = 2\n")

    with pytest.raises(ConfigError, match="did you mean PEAK_TRADE_CONFIG\\?") as refused:
        load_config(environ={variable: str(path)})

    assert refused.value.source == f"environment {variable}"


def test_a_module_variable_with_one_underscore_suggests_the_two_underscore_form(
    fresh: ManualClock,
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(environ={"PEAK_TRADE_LIVE_RATE_LIMIT_REQUESTS": "30"})

    assert "did you mean PEAK_TRADE_LIVE__RATE_LIMIT_REQUESTS?" in refused.value.problem
    assert "PEAK_TRADE_RATE_LIMIT_REQUESTS" not in refused.value.problem


def test_a_module_name_in_a_variable_matches_whatever_its_case(fresh: ManualClock) -> None:
    loaded = load_config(environ={"PEAK_TRADE_live__RATE_LIMIT_REQUESTS": "30"})

    assert loaded.module("live").rate_limit_requests == 30
    assert loaded.module("LIVE").rate_limit_requests == 30
    assert loaded.globals.rate_limit_requests == 100


def test_an_application_variable_that_misses_no_key_is_left_alone(fresh: ManualClock) -> None:
    loaded = load_config(environ={"PEAK_TRADE_ACCOUNT_ID": "42", "PEAK_TRADE_CONFIG_DIR": "/x"})

    assert loaded.globals.rate_limit_requests == 100

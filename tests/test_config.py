"""Loading, validating and layering the resilience settings (peak_resilience.config)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience import config
from peak_resilience._native import CircuitBreaker as NativeBreaker
from peak_resilience.config import ConfigError, configure, load_config

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"

WriteConfig = Callable[..., Path]


def test_the_repository_config_toml_is_the_guides_and_loads_cleanly(fresh: object) -> None:
    loaded = load_config(REPO_CONFIG, environ={})

    # The guide's four modules, and the demo's own table.
    assert loaded.modules == ("backtest", "portfolio", "risk", "live", "demo")
    assert loaded.globals.circuit_breaker_threshold == 5
    assert loaded.globals.rate_limit_requests == 100
    live = loaded.module("live")
    assert (live.circuit_breaker_threshold, live.circuit_breaker_timeout) == (2, 120.0)
    assert live.rate_limit_requests == 30
    assert live.rate_limit_window == 60.0  # from [resilience]
    portfolio = loaded.module("portfolio")
    assert (portfolio.circuit_breaker_threshold, portfolio.circuit_breaker_timeout) == (3, 30.0)
    assert loaded.module("risk").fail_safe_defaults is True
    assert loaded.module("portfolio").fail_safe_defaults is False


def test_without_any_file_the_built_in_defaults_are_the_guides_values(fresh: object) -> None:
    loaded = load_config(environ={})

    assert loaded.source is None
    defaults = loaded.globals
    assert defaults.circuit_breaker_enabled is True
    assert defaults.circuit_breaker_threshold == 5
    assert defaults.circuit_breaker_timeout == 60.0
    assert defaults.rate_limit_enabled is True
    assert defaults.rate_limit_requests == 100
    assert defaults.rate_limit_window == 60.0
    assert defaults.metrics_enabled is True
    assert defaults.fail_safe_defaults is False
    assert defaults.half_open_max_calls == 1
    assert defaults.burst == 100
    assert defaults.metrics_prefix == "peak_trade"
    assert defaults.rate_limit_backend == defaults.circuit_breaker_backend == "memory"
    assert defaults.shared_dir == f"/dev/shm/peak-resilience-{os.geteuid()}"
    assert defaults.on_backend_error == "local"
    assert defaults.health_token is None and defaults.redis_url is None


def test_a_module_without_a_table_gets_the_global_settings(write_config: WriteConfig) -> None:
    path = write_config("""
        [resilience]
        circuit_breaker_threshold = 7
        [resilience.live]
        circuit_breaker_threshold = 2
    """)

    assert load_config(path, environ={}).module("anything").circuit_breaker_threshold == 7


def test_without_a_path_peak_trade_config_comes_before_the_working_directory(
    fresh: object, tmp_path: Path, write_config: WriteConfig
) -> None:
    write_config("[resilience]\ncircuit_breaker_threshold = 4\n", name="config.toml")
    elsewhere = write_config("[resilience]\ncircuit_breaker_threshold = 9\n", name="prod.toml")

    assert load_config(environ={}).globals.circuit_breaker_threshold == 4
    assert load_config(environ={}).source == "config.toml"
    from_env = load_config(environ={"PEAK_TRADE_CONFIG": str(elsewhere)})
    assert from_env.globals.circuit_breaker_threshold == 9


def test_peak_trade_config_naming_a_missing_file_is_an_error_naming_the_variable(
    fresh: object,
) -> None:
    with pytest.raises(ConfigError, match=r"PEAK_TRADE_CONFIG.*nowhere\.toml"):
        load_config(environ={"PEAK_TRADE_CONFIG": "nowhere.toml"})


def test_an_explicit_path_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the file"):
        load_config(tmp_path / "missing.toml", environ={})


def test_guide_environment_overrides_change_the_global_settings(fresh: object) -> None:
    environ = {
        "PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD": "10",
        "PEAK_TRADE_RATE_LIMIT_REQUESTS": "200",
    }

    loaded = load_config(REPO_CONFIG, environ=environ)

    assert loaded.globals.circuit_breaker_threshold == 10
    assert loaded.globals.rate_limit_requests == 200
    # A module that sets its own value in the file keeps it: the module is more specific.
    assert loaded.module("live").circuit_breaker_threshold == 2
    assert loaded.module("live").rate_limit_requests == 30
    assert loaded.module("data").rate_limit_requests == 200


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (set(), 5),
        ({"global file"}, 6),
        ({"global file", "global env"}, 7),
        ({"global file", "global env", "module file"}, 8),
        ({"global file", "global env", "module file", "module env"}, 9),
        ({"module env"}, 9),
        ({"global env", "module file"}, 8),
        ({"global file", "module env"}, 9),
    ],
)
def test_precedence_is_module_env_then_module_file_then_global_env_then_global_file(
    write_config: WriteConfig, layers: set[str], expected: int
) -> None:
    text = "[resilience]\n"
    if "global file" in layers:
        text += "circuit_breaker_threshold = 6\n"
    text += "[resilience.live]\n"
    if "module file" in layers:
        text += "circuit_breaker_threshold = 8\n"
    environ = {}
    if "global env" in layers:
        environ["PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD"] = "7"
    if "module env" in layers:
        environ["PEAK_TRADE_LIVE__CIRCUIT_BREAKER_THRESHOLD"] = "9"

    loaded = load_config(write_config(text), environ=environ)

    assert loaded.module("live").circuit_breaker_threshold == expected


def test_a_module_name_in_a_variable_is_upper_cased_with_other_characters_as_underscores(
    write_config: WriteConfig,
) -> None:
    path = write_config('[resilience."live-eu"]\nrate_limit_requests = 30\n')

    loaded = load_config(path, environ={"PEAK_TRADE_LIVE_EU__RATE_LIMIT_REQUESTS": "12"})

    assert config.env_name("live-eu") == "LIVE_EU"
    assert loaded.module("live-eu").rate_limit_requests == 12


def test_a_module_override_from_the_environment_needs_no_table_in_the_file() -> None:
    loaded = load_config(environ={"PEAK_TRADE_DATA__RATE_LIMIT_ENABLED": "off"})

    assert loaded.module("data").rate_limit_enabled is False
    assert loaded.module("live").rate_limit_enabled is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
    ],
)
def test_booleans_from_the_environment_read_the_usual_spellings(text: str, expected: bool) -> None:
    loaded = load_config(environ={"PEAK_TRADE_METRICS_ENABLED": text})

    assert loaded.globals.metrics_enabled is expected


def test_numbers_from_the_environment_are_parsed_to_the_keys_type() -> None:
    loaded = load_config(
        environ={"PEAK_TRADE_CIRCUIT_BREAKER_TIMEOUT": "2.5", "PEAK_TRADE_RATE_LIMIT_BURST": "7"}
    )

    assert loaded.globals.circuit_breaker_timeout == 2.5
    assert loaded.globals.burst == 7


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PEAK_TRADE_RATE_LIMIT_REQUESTS", "lots", "must be an integer, got 'lots'"),
        ("PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD", "0", "must be between 1 and 16777215, got 0"),
        ("PEAK_TRADE_RATE_LIMIT_WINDOW", "-5", "must be greater than 0, got -5.0"),
        ("PEAK_TRADE_CIRCUIT_BREAKER_TIMEOUT", "nan", "must be a finite number"),
        ("PEAK_TRADE_METRICS_ENABLED", "maybe", "must be a boolean"),
        ("PEAK_TRADE_LIVE__RATE_LIMIT_BACKEND", "disk", "must be one of 'memory', 'shared'"),
    ],
)
def test_a_malformed_environment_value_is_an_error_naming_the_variable(
    variable: str, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={variable: value})

    assert f"environment {variable}" in str(raised.value)
    assert problem in str(raised.value)


def test_an_unknown_key_in_a_module_variable_suggests_the_nearest_known_key() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"PEAK_TRADE_LIVE__CIRCUIT_BREAKER_TRESHOLD": "3"})

    message = str(raised.value)
    assert "PEAK_TRADE_LIVE__CIRCUIT_BREAKER_TRESHOLD" in message
    assert "did you mean 'circuit_breaker_threshold'?" in message


def test_a_near_miss_of_a_global_key_in_the_environment_is_an_error_not_ignored() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"PEAK_TRADE_CIRCUIT_BREAKER_TRESHOLD": "10"})

    assert str(raised.value) == (
        "environment PEAK_TRADE_CIRCUIT_BREAKER_TRESHOLD [resilience] "
        "circuit_breaker_treshold: unknown key; did you mean "
        "PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD?"
    )


def test_other_peak_trade_variables_of_the_application_are_left_alone() -> None:
    loaded = load_config(
        environ={"PEAK_TRADE_ENV": "production", "PEAK_TRADE_METRICS_PORT": "9108"}
    )

    assert loaded.globals == load_config(environ={}).globals


def test_a_typo_in_the_file_names_the_file_table_and_key_and_suggests_the_right_one(
    write_config: WriteConfig,
) -> None:
    path = write_config("""
        [resilience.live]
        circuit_breaker_treshold = 3
    """)

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    error = raised.value
    assert str(error) == (
        f"{path} [resilience.live] circuit_breaker_treshold: unknown key; "
        "did you mean 'circuit_breaker_threshold'?"
    )
    assert (error.source, error.table, error.key) == (
        str(path),
        "resilience.live",
        "circuit_breaker_treshold",
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('circuit_breaker_threshold = "5"', "must be an integer, got '5'"),
        ("circuit_breaker_threshold = 3.0", "must be an integer, got 3.0"),
        ("circuit_breaker_threshold = true", "must be an integer, got True"),
        ('circuit_breaker_enabled = "yes"', "must be a boolean (true or false), got 'yes'"),
        ("rate_limit_window = false", "must be a number, got False"),
        ("circuit_breaker_threshold = 0", "must be between 1 and 16777215, got 0"),
        ("circuit_breaker_threshold = 16777216", "must be between 1 and 16777215, got 16777216"),
        ("rate_limit_window = -1", "must be greater than 0, got -1.0"),
        ("circuit_breaker_timeout = 0", "must be greater than 0, got 0.0"),
        ("rate_limit_requests = 0", "must be at least 1, got 0"),
        ("rate_limit_burst = 0", "must be at least 1, got 0"),
        ("half_open_max_calls = 0", "must be between 1 and 4095, got 0"),
        ("max_concurrent = 0", "must be between 1 and 18446744073709551615, got 0"),
        (
            "max_concurrent = 18446744073709551616",
            "must be between 1 and 18446744073709551615, got 18446744073709551616",
        ),
        ('rate_limit_backend = "disk"', "must be one of 'memory', 'shared', 'redis', got 'disk'"),
        ('on_backend_error = "ignore"', "must be one of 'fail_closed', 'fail_open', 'local'"),
    ],
)
def test_a_wrong_type_or_impossible_value_is_an_error_naming_the_key(
    write_config: WriteConfig, line: str, problem: str
) -> None:
    key = line.split(" = ")[0]
    path = write_config(f"[resilience.portfolio]\n{line}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})

    assert str(raised.value).startswith(f"{path} [resilience.portfolio] {key}: ")
    assert problem in str(raised.value)


def test_the_failure_threshold_limit_the_config_checks_is_the_native_breakers() -> None:
    limit = config.MAX_FAILURE_THRESHOLD
    NativeBreaker(limit, 1.0, "threshold-at-the-limit")

    with pytest.raises(ValueError, match=f"failure_threshold must be at most {limit}"):
        NativeBreaker(limit + 1, 1.0, "threshold-past-the-limit")


def test_the_half_open_limit_the_config_checks_is_the_native_breakers() -> None:
    # The native core does not export its limit: the schema states it, and this holds the
    # two to one value.
    limit = config.MAX_HALF_OPEN_CALLS
    NativeBreaker(1, 1.0, "at-the-limit", limit)

    with pytest.raises(ValueError, match=f"half_open_max_calls must be at most {limit}"):
        NativeBreaker(1, 1.0, "past-the-limit", limit + 1)


def test_a_global_only_key_in_a_module_table_is_an_error(write_config: WriteConfig) -> None:
    path = write_config('[resilience.live]\nmetrics_prefix = "live"\n')

    with pytest.raises(ConfigError, match=r"metrics_prefix is a global setting"):
        load_config(path, environ={})


def test_a_metrics_prefix_that_is_no_prometheus_name_is_an_error(
    write_config: WriteConfig,
) -> None:
    path = write_config('[resilience]\nmetrics_prefix = "peak-trade"\n')

    with pytest.raises(ConfigError, match=r"\[resilience\] metrics_prefix: must be a Prometheus"):
        load_config(path, environ={})


def test_the_redis_backend_without_a_redis_url_is_an_error(write_config: WriteConfig) -> None:
    path = write_config('[resilience.live]\nrate_limit_backend = "redis"\n')

    with pytest.raises(ConfigError, match=r"\[resilience.live\] redis_url: rate_limit_backend"):
        load_config(path, environ={})


def test_a_rate_the_bucket_cannot_represent_is_an_error_at_load(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        "[resilience.hft]\nrate_limit_requests = 10000000000\nrate_limit_window = 1\n"
    )

    with pytest.raises(ConfigError, match=r"\[resilience.hft\] rate_limit_requests: .*range"):
        load_config(path, environ={})


def test_a_table_inside_a_module_table_is_an_error(write_config: WriteConfig) -> None:
    path = write_config("[resilience.live.orders]\ncircuit_breaker_threshold = 2\n")

    with pytest.raises(ConfigError, match=r"module tables are one level deep"):
        load_config(path, environ={})


def test_a_file_that_is_not_toml_is_an_error_naming_the_file(write_config: WriteConfig) -> None:
    path = write_config("[resilience\ncircuit_breaker_threshold = 2\n")

    with pytest.raises(ConfigError, match=rf"{path}: not valid TOML"):
        load_config(path, environ={})


def test_the_rest_of_the_applications_config_toml_is_ignored(write_config: WriteConfig) -> None:
    path = write_config("""
        [exchange]
        name = "kraken"
        [resilience]
        circuit_breaker_threshold = 4
    """)

    assert load_config(path, environ={}).globals.circuit_breaker_threshold == 4


def test_load_config_does_not_apply_what_it_loads(fresh: object, write_config: WriteConfig) -> None:
    configure(write_config("[resilience]\ncircuit_breaker_threshold = 4\n", name="a.toml"))

    load_config(write_config("[resilience]\ncircuit_breaker_threshold = 8\n"), environ={})

    assert config.active().globals.circuit_breaker_threshold == 4


def test_a_bad_reload_leaves_the_previous_configuration_in_force(
    fresh: object, write_config: WriteConfig
) -> None:
    good = configure(write_config("[resilience]\ncircuit_breaker_threshold = 4\n", name="a.toml"))

    with pytest.raises(ConfigError):
        configure(write_config("[resilience]\ncircuit_breaker_threshold = 0\n"))

    assert config.active() is good


def test_the_first_use_without_configure_loads_the_working_directorys_config_toml(
    fresh: object, write_config: WriteConfig
) -> None:
    write_config("[resilience.live]\ncircuit_breaker_threshold = 2\n", name="config.toml")

    assert config.active().module("live").circuit_breaker_threshold == 2
    assert config.active().source == "config.toml"

"""How a value may be written: a file saved with a byte-order mark, a choice with spaces
around it, as a number with spaces around it is."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from peak_resilience.config import ConfigError, load_config
from peak_resilience.testing import ManualClock


def test_a_file_with_a_utf8_byte_order_mark_loads(fresh: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(codecs.BOM_UTF8 + b"[resilience]\ncircuit_breaker_threshold = 2\n")

    assert load_config(path, environ={}).globals.circuit_breaker_threshold == 2


def test_a_file_that_is_not_utf8_is_named_as_such(fresh: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[resilience]\n# caf\xe9\n")

    with pytest.raises(ConfigError, match="not UTF-8") as refused:
        load_config(path, environ={})

    assert refused.value.source == str(path)


def test_a_choice_from_the_environment_is_trimmed_as_a_number_is(
    fresh: ManualClock, tmp_path: Path
) -> None:
    loaded = load_config(
        environ={
            "PEAK_TRADE_RATE_LIMIT_BACKEND": " shared",
            "PEAK_TRADE_SHARED_DIR": str(tmp_path),
            "PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD": " 8 ",
        }
    )

    assert loaded.globals.rate_limit_backend == "shared"
    assert loaded.globals.circuit_breaker_threshold == 8


def test_a_choice_in_the_file_is_trimmed_too(fresh: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[resilience]\non_backend_error = "fail_closed "\n')

    assert load_config(path, environ={}).globals.on_backend_error == "fail_closed"

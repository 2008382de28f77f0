"""Shared fixtures: a manual clock so that no test sleeps to see time pass."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peak_resilience.testing import ManualClock, fresh_resilience


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def fresh(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ManualClock]:
    """An unconfigured process with an empty module registry on the manual clock, no
    PEAK_TRADE_* variables and no ./config.toml (the working directory is a temp dir)."""
    for variable in list(os.environ):
        if variable.startswith("PEAK_TRADE_"):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    with fresh_resilience(clock):
        yield clock


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Writes a TOML file (dedented) into the temp dir and returns its path."""

    def write(text: str, name: str = "resilience.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write

"""Shared fixtures: a manual clock so that no test sleeps to see time pass."""

from __future__ import annotations

import pytest

from peak_resilience.testing import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)

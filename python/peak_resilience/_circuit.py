"""The words a circuit breaker is described in, below every module that speaks them.

``CircuitState`` is what ``breaker.state`` answers and what the state gauge exports;
``WindowType`` is how a failure rate's window is measured. The breaker, its health
checks, its metrics and the configuration schema all import them from here.
"""

from __future__ import annotations

import enum
from typing import Literal

__all__ = ["CircuitState", "WindowType"]

#: "count": the failure rate over the last ``window_size`` calls; "time": over the last
#: ``window_size`` seconds.
WindowType = Literal["count", "time"]


class CircuitState(enum.IntEnum):
    """A breaker's state; the values are those of the ``..._circuit_breaker_state`` gauge.

    Beside the guide's three: FORCED_OPEN (``force_open()``: refuses every call until
    ``reset()``), DISABLED (``disable()``: admits every call and keeps counting until
    ``reset()``) and METRICS_ONLY (``metrics_only=True``: the state machine decides, its
    own state is ``shadow_state``, but every call runs; would-be refusals are counted).
    """

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2
    FORCED_OPEN = 3
    DISABLED = 4
    METRICS_ONLY = 5

    def __str__(self) -> str:
        # Logs and messages read "OPEN", not the gauge value "2".
        return self.name

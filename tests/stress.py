"""How big the stress runs are.

The default test command runs the short variants (``slow=False`` sizes, fixed). Tests
marked ``slow`` run their full size under ``pytest -m slow``; ``scripts/test-slow`` sets
``PEAK_SLOW_FRACTION`` (e.g. 0.05) to run them in a short form within CI's time.
"""

from __future__ import annotations

import os


def fraction() -> float:
    value = float(os.environ.get("PEAK_SLOW_FRACTION", "1"))
    if not 0 < value <= 1:
        raise ValueError(f"PEAK_SLOW_FRACTION must be in (0, 1], got {value!r}")
    return value


def scaled(full: int, *, slow: bool = True) -> int:
    """``full`` for a default-run test; for a slow one, ``full`` times the fraction."""
    return max(1, round(full * fraction())) if slow else full

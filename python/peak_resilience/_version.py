"""The package's version: ``peak_resilience.__version__`` and ``peak-resilience --version``.

Written here rather than read with ``importlib.metadata`` at import time, which costs
more than the rest of a bare import (~19 ms); tests/test_import_cost.py checks that it is
the installed distribution's version and pyproject.toml's."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

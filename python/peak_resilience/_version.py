"""The installed distribution's version: ``peak_resilience.__version__`` and
``peak-resilience --version``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("peak-resilience")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

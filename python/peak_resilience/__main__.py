"""The ``peak-resilience`` command (also ``python -m peak_resilience``): the console
script's entry point; the commands live in ``_cli``."""

from __future__ import annotations

import sys

from peak_resilience._cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

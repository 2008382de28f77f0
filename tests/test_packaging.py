"""Packaging facts cheap enough for every test run; scripts/package-check builds and
installs the wheel and the sdist for real."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the package depends on tomli there
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_build_system_pins_the_maturin_that_builds_the_package_here() -> None:
    requires = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    pins = [requirement for requirement in requires if requirement.startswith("maturin")]
    assert len(pins) == 1 and pins[0].startswith("maturin=="), pins
    try:
        in_use = version("maturin")
    except PackageNotFoundError:
        in_use = "not installed (run scripts/setup)"
    assert pins[0] == f"maturin=={in_use}"

"""Packaging facts cheap enough for every test run; scripts/package-check builds and
installs the wheel and the sdist for real."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, metadata, version
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


def test_the_installed_metadata_names_the_license_and_only_user_extras() -> None:
    # The published metadata: MIT with its file, and the extras a user installs; the
    # developers' tools are dependency groups, never extras.
    published = metadata("peak-resilience")
    assert published["License-Expression"] == "MIT"
    assert published.get_all("License-File") == ["LICENSE"]
    assert set(published.get_all("Provides-Extra") or []) == {
        "redis",
        "starlette",
        "flask",
        "opentelemetry",
    }
    assert (PYPROJECT.parent / "LICENSE").read_text().startswith("MIT License")
    groups = tomllib.loads(PYPROJECT.read_text())["dependency-groups"]
    assert {"test", "bench", "lint", "release"} <= set(groups)

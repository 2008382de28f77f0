"""Importing one part of the package pays for that part alone (issue 19): the package's
names come on first use, the version is not read from the installed metadata, and
asyncio is imported only by a path that awaits.

Each import is checked in a fresh interpreter (a real process), since this test
process has imported everything long before.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

import peak_resilience

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    shown = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    ran = subprocess.run(
        [sys.executable, "-c", f"{code}\n{shown}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(ran.stdout.splitlines()[-1]))


def test_importing_the_decorator_module_imports_none_of_its_parts_until_a_name_is_used() -> None:
    loaded = _modules_after("import peak_resilience.resilience_helpers")

    parts = {m for m in loaded if m.startswith("peak_resilience.")}
    assert parts == {
        "peak_resilience._lazy",
        "peak_resilience._version",
        "peak_resilience.resilience_helpers",
    }


def test_using_the_decorator_imports_neither_redis_nor_asyncio_nor_the_cli_nor_http() -> None:
    loaded = _modules_after(
        "from peak_resilience.resilience_helpers import with_resilience\n"
        "from peak_resilience.rate_limiter import RateLimiter\n"
        "from peak_resilience.resilience import CircuitBreaker\n"
        "guarded = with_resilience('exchange', 'fetch', use_rate_limiter=True)(len)\n"
        "assert guarded('ab') == 2\n"
        "assert RateLimiter(5, 1.0).acquire()\n"
        "assert CircuitBreaker(name='orders').call(len)('x') == 1\n"
    )

    assert "peak_resilience._modules.registry" in loaded
    assert not {"asyncio", "redis", "importlib.metadata"} & loaded
    ours = {m for m in loaded if m.startswith("peak_resilience.")}
    assert not {m for m in ours if m.startswith(("peak_resilience._cli", "peak_resilience._http"))}
    assert not {m for m in ours if m.startswith("peak_resilience._backends.redis.")} - {
        "peak_resilience._backends.redis.awaited",  # the async steps, their machinery not
        "peak_resilience._backends.redis.sentinel",  # the schema's check of a sentinel URL
    }
    assert not {"peak_resilience.http", "peak_resilience.config"} & loaded


def test_the_version_command_imports_the_command_line_alone() -> None:
    loaded = _modules_after(
        "import contextlib, io\n"
        "from peak_resilience.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--version'])\n"
    )

    ours = {m for m in loaded if m.startswith("peak_resilience.")}
    assert ours <= {
        "peak_resilience.__main__",
        "peak_resilience._cli",
        "peak_resilience._cli.arguments",
        "peak_resilience._cli.commands",
        "peak_resilience._cli.main",
        "peak_resilience._config",
        "peak_resilience._config.errors",
        "peak_resilience._lazy",
        "peak_resilience._version",
    }
    assert "peak_resilience._native" not in loaded


def test_importing_the_package_alone_imports_none_of_its_parts() -> None:
    loaded = _modules_after("import peak_resilience")

    parts = {m for m in loaded if m.startswith("peak_resilience.")}
    assert parts == {"peak_resilience._lazy", "peak_resilience._version"}


def test_an_async_wait_runs_in_a_fresh_process_whatever_asyncio_was_imported_after() -> None:
    loaded = _modules_after(
        "import asyncio\n"
        "from peak_resilience import RateLimiter, with_resilience\n"
        "limiter = RateLimiter(1, 60.0)\n"
        "assert asyncio.run(limiter.acquire_async(timeout=0))\n"
        "assert not asyncio.run(limiter.acquire_async(timeout=0))\n"
    )

    assert "peak_resilience._limiter" in loaded


def test_the_package_names_are_the_guide_modules_objects_on_first_use() -> None:
    from peak_resilience import rate_limiter, resilience, resilience_helpers

    assert peak_resilience.RateLimiter is rate_limiter.RateLimiter
    assert peak_resilience.CircuitBreaker is resilience.CircuitBreaker
    assert peak_resilience.with_resilience is resilience_helpers.with_resilience
    star: dict[str, object] = {}
    exec("from peak_resilience import *", star)
    assert set(peak_resilience.__all__) <= set(star)


def test_a_name_the_package_does_not_have_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="'peak_resilience' has no attribute 'Breaker'"):
        _ = peak_resilience.Breaker  # type: ignore[attr-defined]


def test_the_version_is_the_installed_distributions_and_pyprojects() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = next(
        line.split("=", 1)[1].strip().strip('"')
        for line in pyproject.splitlines()
        if line.startswith("version = ")
    )

    assert peak_resilience.__version__ == importlib.metadata.version("peak-resilience")
    assert peak_resilience.__version__ == declared

"""What the configuration says is what the objects do: a module's rate however it is
written, the same in ``config show``, in ``config validate`` and in a running process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience.config import configure
from peak_resilience.resilience_helpers import create_module_rate_limiter
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]

GLOBAL_WINDOWS_MODULE_PAIR = """
    [resilience]
    rate_limits = ["1200/60s", "50/10s"]

    [resilience.live]
    rate_limit_requests = 30
"""


def admitted_at_once(module: str) -> int:
    limiter = create_module_rate_limiter(module)
    admitted = 0
    for _ in range(2000):  # more than any budget of these tests
        if not limiter.acquire():
            break
        admitted += 1
    return admitted


def test_a_modules_own_request_count_wins_over_global_windows(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(GLOBAL_WINDOWS_MODULE_PAIR))

    assert admitted_at_once("live") == 30
    assert admitted_at_once("backtest") == 50  # no rate of its own: the global windows


def test_a_request_count_from_the_environment_wins_over_windows_in_the_file(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    path = write_config('[resilience]\nrate_limits = ["1200/60s", "50/10s"]\n')

    configure(path, environ={"PEAK_TRADE_RATE_LIMIT_REQUESTS": "30"})

    assert admitted_at_once("live") == 30


def test_a_modules_own_windows_win_over_a_global_request_count(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config("""
            [resilience]
            rate_limit_requests = 30

            [resilience.live]
            rate_limits = ["1200/60s", "7/10s"]
        """)
    )

    assert admitted_at_once("live") == 7


def test_a_reload_that_gives_a_module_its_own_rate_changes_the_live_limiter(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config('[resilience]\nrate_limits = ["1200/60s", "50/10s"]\n'))
    limiter = create_module_rate_limiter("live")

    configure(write_config(GLOBAL_WINDOWS_MODULE_PAIR))

    assert [w[:2] for w in limiter.default_bucket.windows] == [(30, 60.0)]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PEAK_TRADE_")}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


@pytest.mark.parametrize("through", ["file", "environment"])
def test_config_show_prints_the_budget_a_process_started_with_the_file_admits(
    tmp_path: Path, through: str
) -> None:
    path = tmp_path / "config.toml"
    if through == "file":
        path.write_text(textwrap.dedent(GLOBAL_WINDOWS_MODULE_PAIR))
        env = {}
    else:
        path.write_text('[resilience]\nrate_limits = ["1200/60s", "50/10s"]\n[resilience.live]\n')
        env = {"PEAK_TRADE_RATE_LIMIT_REQUESTS": "30"}

    shown = run("-m", "peak_resilience", "config", "show", str(path), env=env)
    process = run(
        "-c",
        "import sys\n"
        "from peak_resilience.config import configure\n"
        "from peak_resilience.resilience_helpers import create_module_rate_limiter\n"
        "configure(sys.argv[1])\n"
        "limiter = create_module_rate_limiter('live')\n"
        "print(sum(limiter.acquire() for _ in range(2000)))\n",
        str(path),
        env=env,
    )

    assert shown.returncode == 0, shown.stderr
    live = shown.stdout.split("[resilience.live]", 1)[1]
    assert live.splitlines()[1].strip() == "# the limiter enforces 30/60s"
    assert "replaced by rate_limit_requests" in live
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "30"


def test_config_validate_checks_the_budget_a_module_really_gets(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent("""
            [resilience]
            rate_limits = ["1200/60s", "50/10s"]
            rate_limit_reserve = 40

            [resilience.live]
            rate_limit_requests = 30
        """)
    )

    result = run("-m", "peak_resilience", "config", "validate", str(path))

    assert result.returncode == 2
    assert "[resilience.live]" in result.stderr
    assert "rate_limit_reserve" in result.stderr
    assert "Traceback" not in result.stderr

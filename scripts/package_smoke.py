"""Smoke test of an installed peak-resilience, run by scripts/package-check inside a fresh
venv (never from the source tree): the package imports from site-packages, a limiter
rejects past its budget, a breaker opens, the Redis backend's Lua scripts are installed
beside it, the console script reports the version.

Usage: python package_smoke.py EXPECTED_VERSION
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import peak_resilience
from peak_resilience import CircuitBreaker, CircuitBreakerError, CircuitState, RateLimiter
from peak_resilience._backends.redis import breaker_store, bucket_store
from peak_resilience.testing import ManualClock


def main(expected_version: str) -> None:
    installed = Path(sysconfig.get_paths()["platlib"]).resolve()
    imported = Path(peak_resilience.__file__).resolve()
    assert imported.is_relative_to(installed), f"imported {imported}, not from {installed}"
    assert peak_resilience.__version__ == expected_version, peak_resilience.__version__
    print(f"smoke: peak_resilience {peak_resilience.__version__} imported from {imported.parent}")

    clock = ManualClock(start=0.0)
    limiter = RateLimiter(3, 60.0, clock=clock)
    admitted = [limiter.acquire() for _ in range(4)]
    assert admitted == [True, True, True, False], admitted
    print("smoke: a limiter of 3 requests admits 3 and rejects the 4th")

    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30.0, name="smoke", clock=clock)

    @breaker.call
    def fetch() -> None:
        raise ConnectionError("exchange down")

    for _ in range(2):
        with contextlib.suppress(ConnectionError):
            fetch()
    assert breaker.state is CircuitState.OPEN, breaker.state
    try:
        fetch()
    except CircuitBreakerError as refused:
        assert "smoke" in str(refused), str(refused)
    else:
        raise AssertionError("an open breaker ran the function")
    print("smoke: a breaker opens after 2 failures and fails fast with CircuitBreakerError")

    for script in (breaker_store.BREAKER, bucket_store.BUCKET):
        assert "redis.call" in script.source and len(script.sha) == 40, script.sha
    print("smoke: the Redis backend's Lua scripts are installed with the package")

    cli = Path(sys.executable).parent / "peak-resilience"
    shown = subprocess.run(
        [str(cli), "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert shown == f"peak-resilience {expected_version}", shown
    print(f"smoke: `peak-resilience --version` prints {shown!r}")

    with tempfile.TemporaryDirectory() as where:
        subprocess.run([str(cli), "config", "init", where], check=True, timeout=60)
        written = (Path(where) / "config.toml").read_text(encoding="utf-8")
    assert "[resilience]" in written and "[resilience.demo]" in written, written
    print("smoke: `peak-resilience config init` writes the example config.toml from the wheel")


if __name__ == "__main__":
    main(sys.argv[1])

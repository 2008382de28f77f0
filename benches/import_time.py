"""Import time as whole processes, beside the budget of issue 19.

    python benches/import_time.py [runs]

Each command runs ``runs`` times (default 15) in a fresh interpreter; the best wall time
is kept (the least disturbed by other load). The budget of a command is twice a bare
``python -c pass`` plus prometheus-client's own import (its process less a bare one):
the package may cost one bare start-up beyond what prometheus-client costs anyway.

Bytecode is compiled first and may be written (``PYTHONDONTWRITEBYTECODE`` is dropped):
an installed package has its ``.pyc`` files, and compiling the source on every start
would double what is measured.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import time
from pathlib import Path

import peak_resilience

PYTHON = sys.executable
COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "import prometheus_client": [PYTHON, "-c", "import prometheus_client"],
    "import peak_resilience.resilience_helpers": [
        PYTHON,
        "-c",
        "import peak_resilience.resilience_helpers",
    ],
    "from ...resilience_helpers import with_resilience": [
        PYTHON,
        "-c",
        "from peak_resilience.resilience_helpers import with_resilience",
    ],
    "from ...rate_limiter import RateLimiter": [
        PYTHON,
        "-c",
        "from peak_resilience.rate_limiter import RateLimiter",
    ],
    "peak-resilience --version": [PYTHON, "-m", "peak_resilience", "--version"],
}
#: The commands held to the budget (the others are shown for what they cost).
BUDGETED = ("import peak_resilience.resilience_helpers", "peak-resilience --version")


def best_ms(command: list[str], runs: int, env: dict[str, str]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main(runs: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    compileall.compile_dir(Path(peak_resilience.__file__).parent, quiet=1)
    taken = {label: best_ms(command, runs, env) for label, command in COMMANDS.items()}
    bare = taken["python -c pass"]
    budget = 2 * bare + (taken["import prometheus_client"] - bare)
    print(f"{'command':<52} {'ms':>7}  {'/budget':>7}")
    for label, ms in taken.items():
        ratio = f"{ms / budget:7.2f}" if label != "python -c pass" else ""
        mark = "  (budgeted)" if label in BUDGETED else ""
        print(f"{label:<52} {ms:7.1f}  {ratio}{mark}")
    print(f"budget: 2 x bare + prometheus-client's own import = {budget:.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)

"""Every Python example in the README runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from peak_resilience.testing import fresh_resilience

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(
    "index",
    [
        # The shared backend's examples need a build that has it (not the portable core).
        pytest.param(i, marks=pytest.mark.shared_backend) if 'backend="shared"' in block else i
        for i, block in enumerate(BLOCKS)
    ],
)
def test_readme_example_runs(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # As a user would run them: from the repository (where config.toml is), in a process
    # whose module registry and configuration start empty.
    monkeypatch.chdir(README.parent)
    for name in [n for n in os.environ if n.startswith("PEAK_TRADE_")]:
        monkeypatch.delenv(name)
    with fresh_resilience():
        # Named as a module of its own (Flask(__name__) finds its root path by it).
        namespace = {"__name__": f"readme_block_{index}"}
        exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), namespace)

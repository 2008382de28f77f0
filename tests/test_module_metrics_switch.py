"""A module's own ``metrics_enabled`` decides for its guarded functions, over the global
one, and a reload switches a function already decorated."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience import _instances
from peak_resilience.config import configure
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]
_names = itertools.count()


def successes(name: str) -> int:
    count: int = _instances.operation(name).snapshot()["successes"]
    return count


def test_a_module_that_turns_metrics_on_records_while_the_global_switch_is_off(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    module = f"loud{next(_names)}"
    configure(
        write_config(
            "[resilience]\nmetrics_enabled = false\n"
            f"[resilience.{module}]\nmetrics_enabled = true\n"
        )
    )
    loud = with_resilience(module, "op")(lambda: None)
    quiet = with_resilience(f"quiet{next(_names)}", "op")(lambda: None)

    loud()
    quiet()

    assert successes(f"{module}.op") == 1


@pytest.mark.parametrize(("before", "after", "recorded"), [(False, True, 1), (True, False, 1)])
def test_a_reload_switches_a_modules_metrics_for_a_function_already_decorated(
    fresh: ManualClock, write_config: WriteConfig, before: bool, after: bool, recorded: int
) -> None:
    module = f"switched{next(_names)}"
    table = "[resilience.{}]\nmetrics_enabled = {}\n"
    configure(write_config(table.format(module, str(before).lower())))
    call = with_resilience(module, "op")(lambda: None)
    call()  # recorded only if on before

    configure(write_config(table.format(module, str(after).lower()), name="after.toml"))
    call()  # recorded only if on after

    assert successes(f"{module}.op") == recorded

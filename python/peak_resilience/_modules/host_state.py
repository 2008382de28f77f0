"""The host's shared state, for ``peak-resilience serve`` and ``check``.

Worker processes that use ``rate_limit_backend = "shared"`` or
``circuit_breaker_backend = "shared"`` keep their module limiters and breakers in files
under ``shared_dir``. A separate health process attaches to those files with the same
configuration, so that its endpoints report (and export) the whole host's state.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from peak_resilience._backends.shared import limiter_prefix
from peak_resilience._config.load import Config
from peak_resilience._modules.registry import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
)

__all__ = ["attach_shared_state"]


def _breaker_names(directory: Path) -> list[str]:
    """The breaker names with a file in ``directory`` (``breaker.<encoded name>.breaker``)."""
    if not directory.is_dir():
        return []
    return sorted(
        unquote(path.name[len("breaker.") : -len(".breaker")])
        for path in directory.glob("breaker.*.breaker")
    )


def attach_shared_state(config: Config) -> list[str]:
    """Opens the module limiters and breakers that live in shared files, as the workers
    configured by ``config`` made them; returns what was attached, for the log line."""
    attached: list[str] = []
    for module in config.modules:
        settings = config.module(module)
        if settings.rate_limit_backend == "shared":
            prefix = limiter_prefix(module, settings.shared_dir)
            if list(prefix.parent.glob(f"{prefix.name}.*.bucket")):
                create_module_rate_limiter(module)
                attached.append(f"limiter {module}")
        if settings.circuit_breaker_backend == "shared":
            for name in _breaker_names(Path(settings.shared_dir)):
                owner, _, operation = name.partition(".")
                if owner == module and operation:
                    create_module_circuit_breaker(module, operation)
                    attached.append(f"breaker {name}")
    return attached

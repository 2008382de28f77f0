"""The host's shared state, for ``peak-resilience serve`` and ``check``.

Worker processes that use ``rate_limit_backend = "shared"`` or
``circuit_breaker_backend = "shared"`` keep their module limiters and breakers in files
under ``shared_dir``. A separate health process attaches to those files with the same
configuration, so that its endpoints report (and export) the whole host's state.
"""

from __future__ import annotations

from peak_resilience._config.load import Config
from peak_resilience._modules.registry import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
)
from peak_resilience._native import shared_breaker_names, shared_limiter_exists

__all__ = ["attach_shared_state"]


def attach_shared_state(config: Config) -> list[str]:
    """Opens the module limiters and breakers that live in shared files, as the workers
    configured by ``config`` made them; returns what was attached, for the log line."""
    attached: list[str] = []
    for module in config.modules:
        settings = config.module(module)
        if settings.rate_limit_backend == "shared" and shared_limiter_exists(
            settings.shared_dir, module
        ):
            create_module_rate_limiter(module)
            attached.append(f"limiter {module}")
        if settings.circuit_breaker_backend == "shared":
            for name in shared_breaker_names(settings.shared_dir):
                owner, _, operation = name.partition(".")
                if owner == module and operation:
                    create_module_circuit_breaker(module, operation)
                    attached.append(f"breaker {name}")
    return attached

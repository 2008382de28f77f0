"""Where a breaker's or a limiter's state lives: the one place a backend is chosen.

The native breaker and bucket are the same class on every backend; what changes is where
their state is: in this process (``"memory"``), in a file of ``shared_dir`` mapped by
every process of the host (``"shared"``), or in a remote store that every host asks
(``"redis"``), whose outages the native object handles by ``on_backend_error``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peak_resilience._backends import choice
from peak_resilience._native import ManualClock

__all__ = ["Place", "place"]


@dataclass(frozen=True)
class Place:
    """The native constructor's keywords that put the state on a backend."""

    shared_dir: Path | None = None
    store: Any = None

    def keywords(self, on_backend_error: str) -> dict[str, Any]:
        return {
            "shared_dir": self.shared_dir,
            "store": self.store,
            "on_backend_error": on_backend_error,
        }


def place(
    kind: Literal["breaker", "limiter"],
    backend: object,
    name: str | None,
    *,
    shared_dir: str | os.PathLike[str] | None,
    redis_url: str | None,
    redis_timeout: float,
    on_backend_error: object,
    clock: ManualClock | None,
) -> Place:
    """Where the breaker or limiter (``kind``) named ``name`` keeps its state on
    ``backend``."""
    backend = choice.check_backend(backend)
    policy = choice.check_on_backend_error(on_backend_error)
    # Each backend's machinery is imported by the branch that uses it: a memory object
    # (the default) pays for neither the Redis client nor the shared files' paths.
    if backend == "shared":
        from peak_resilience._backends import shared

        return Place(shared_dir=shared.directory(name, shared_dir, kind))
    if backend == "redis":
        from peak_resilience._backends.redis.breaker_store import RedisBreakerStore
        from peak_resilience._backends.redis.bucket_store import RedisLimiterStore
        from peak_resilience._backends.redis.connection import named_link

        timeout = choice.check_timeout(redis_timeout)
        # A manual clock reaches the scripts only in tests: in production Redis' own clock
        # is the one every host agrees on.
        store_of = RedisBreakerStore if kind == "breaker" else RedisLimiterStore
        named, link = named_link(kind, name, redis_url, timeout=timeout, policy=policy)
        return Place(store=store_of(named, link, clock))
    return Place()

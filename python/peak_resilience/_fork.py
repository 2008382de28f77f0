"""What a forked child must redo (gunicorn ``--preload``, multiprocessing's fork): the one
place modules register their after-fork resets. Where processes do not fork (Windows has
no ``os.register_at_fork``) there is nothing to reset, and nothing is registered."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["after_fork_in_child"]


def after_fork_in_child(reset: Callable[[], object]) -> None:
    """Runs ``reset`` in every child forked from now on, where the platform forks."""
    register = getattr(os, "register_at_fork", None)
    if register is not None:
        register(after_in_child=reset)

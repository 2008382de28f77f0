"""The shared-memory backend's directory: where, and whose.

Every bucket and breaker of the shared backend is a file in ``shared_dir``: by default
``/dev/shm/peak-resilience-<uid>`` (memory, never disk), or the same under the temporary
directory where there is no ``/dev/shm`` (macOS). The config's default and the
constructors' are this one function, so a module limiter and a ``RateLimiter(...,
backend="shared")`` of one name share one budget. The directory is created with mode 0700
and must belong to this user and be writable by nobody else, since whoever can write it
can create the files first and spend (or block) the budget. The files' names are the
native core's (``rust/files.rs``), so that every process names them alike.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
import tempfile
from pathlib import Path

from peak_resilience._native import SHARED_SUPPORTED

__all__ = ["default_shared_dir", "directory"]


def _user() -> str:
    """This process's user as a path part: the effective uid on POSIX, the login elsewhere
    (Windows has no uid; its temp dir is per user already)."""
    geteuid = getattr(os, "geteuid", None)
    return str(geteuid()) if geteuid is not None else getpass.getuser()


def default_shared_dir() -> Path:
    """``/dev/shm/peak-resilience-<uid>``, or the same under the temp dir without /dev/shm."""
    base = Path("/dev/shm")
    if not base.is_dir():
        base = Path(tempfile.gettempdir())
    return base / f"peak-resilience-{_user()}"


def directory(name: str | None, shared_dir: str | os.PathLike[str] | None, kind: str) -> Path:
    """The directory the shared file of the ``kind`` named ``name`` goes in, created if
    missing; refused when it is not a directory of this user's."""
    if not SHARED_SUPPORTED:
        raise ValueError(
            f"backend='shared' is not supported on this platform ({sys.platform}): it needs "
            "a clock every process of the host reads alike and memory-mapped files; use "
            "backend='memory' (one process) or backend='redis' (several processes or hosts)"
        )
    if not name:
        raise ValueError(
            f"backend='shared' needs a name for the {kind}: processes find the same "
            "shared state by name"
        )
    found = Path(shared_dir) if shared_dir is not None else default_shared_dir()
    try:
        found.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = found.stat()
    except OSError as exc:
        raise OSError(exc.errno, f"shared_dir {str(found)!r}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"shared_dir {str(found)!r} is not a directory")
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and info.st_uid != geteuid():
        raise PermissionError(
            f"shared_dir {str(found)!r} belongs to uid {info.st_uid}, not to this "
            f"process (uid {geteuid()}): choose a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"shared_dir {str(found)!r} is writable by its group or by everyone (mode "
            f"{stat.S_IMODE(info.st_mode):o}): another user could create the files first; "
            f"run chmod go-w on it or choose a directory of your own"
        )
    return found

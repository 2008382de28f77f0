"""The shared-memory backend's directory: where, and whose.

Every bucket and breaker of the shared backend is a file in ``shared_dir``: by default
``/dev/shm/peak-resilience-<uid>`` (memory, never disk), or the same under the temporary
directory where there is no ``/dev/shm``. The directory is created with mode 0700 and
must belong to this user, since whoever can write it can spend the budget. The files'
names are the native core's (``rust/files.rs``), so that every process names them alike.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["default_shared_dir", "directory"]


def default_shared_dir() -> Path:
    """``/dev/shm/peak-resilience-<uid>``, or the same under the temp dir without /dev/shm."""
    base = Path("/dev/shm")
    if not base.is_dir():
        base = Path(tempfile.gettempdir())
    return base / f"peak-resilience-{os.geteuid()}"


def directory(name: str | None, shared_dir: str | os.PathLike[str] | None, kind: str) -> Path:
    """The directory the shared file of the ``kind`` named ``name`` goes in, created if
    missing; refused when it is not a directory of this user's."""
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
    if info.st_uid != os.geteuid():
        raise PermissionError(
            f"shared_dir {str(found)!r} belongs to uid {info.st_uid}, not to this "
            f"process (uid {os.geteuid()}): choose a directory of your own"
        )
    return found

"""Where the shared-memory backend keeps its files.

One file per bucket and per breaker, named after the limiter or breaker (and endpoint), in
``shared_dir``: by default ``/dev/shm/peak-resilience-<uid>`` (memory, never disk), or
the temporary directory where there is no ``/dev/shm``. The directory is created with
mode 0700 and must belong to this user, since whoever can write it can spend the budget.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["breaker_file", "default_shared_dir", "limiter_prefix"]


def default_shared_dir() -> Path:
    """``/dev/shm/peak-resilience-<uid>``, or the same under the temp dir without /dev/shm."""
    base = Path("/dev/shm")
    if not base.is_dir():
        base = Path(tempfile.gettempdir())
    return base / f"peak-resilience-{os.geteuid()}"


def file_component(name: str) -> str:
    """``name`` as it can stand in a file name: bytes outside ``A-Za-z0-9_-`` as ``%XX``
    (the native layer encodes endpoint names the same way)."""
    keep = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in name.encode())


def _directory(shared_dir: str | os.PathLike[str] | None) -> Path:
    directory = Path(shared_dir) if shared_dir is not None else default_shared_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        raise OSError(exc.errno, f"shared_dir {str(directory)!r}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"shared_dir {str(directory)!r} is not a directory")
    if info.st_uid != os.geteuid():
        raise PermissionError(
            f"shared_dir {str(directory)!r} belongs to uid {info.st_uid}, not to this "
            f"process (uid {os.geteuid()}): choose a directory of your own"
        )
    return directory


def _require_name(name: str | None, kind: str) -> str:
    if not name:
        raise ValueError(
            f"backend='shared' needs a name for the {kind}: processes find the same "
            "shared state by name"
        )
    return name


def limiter_prefix(name: str | None, shared_dir: str | os.PathLike[str] | None) -> Path:
    """The path prefix of a limiter's bucket files (``<prefix>.default.bucket``, ...)."""
    return _directory(shared_dir) / f"limiter.{file_component(_require_name(name, 'limiter'))}"


def breaker_file(name: str | None, shared_dir: str | os.PathLike[str] | None) -> Path:
    """The shared file of a breaker."""
    name = _require_name(name, "breaker")
    return _directory(shared_dir) / f"breaker.{file_component(name)}.breaker"

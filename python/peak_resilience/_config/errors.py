"""The one error a configuration raises."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration that cannot be used: names the file (or environment variable), the
    table and the key that are wrong, and what would be right."""

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        table: str | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.table = table
        self.key = key
        where = [part for part in (source, f"[{table}]" if table else None, key) if part]
        super().__init__(f"{' '.join(where)}: {problem}" if where else problem)

"""What a name must be to become a Prometheus label value (an operation, a breaker, a
limiter, an endpoint, a health check, an error type): a non-empty str that encodes as
UTF-8. A lone surrogate ("\\ud800", from a mis-decoded byte) cannot be written into the
exposition, so one such name would break every later scrape: it is refused up front.
"""

from __future__ import annotations

__all__ = ["label_value"]


def label_value(value: object, argument: str) -> str:
    """``value`` if it can name a series; a ValueError naming ``argument`` if not."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{argument} must be a non-empty str, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{argument} must be text that encodes as UTF-8 (no lone surrogates), got {value!r}"
        ) from None
    return value

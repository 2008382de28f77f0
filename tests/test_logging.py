"""The guide's Debugging section: refusals are logged at DEBUG once someone turns it up,
and cost no Python call while nobody does."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from peak_resilience import _native
from peak_resilience.errors import CircuitBreakerError
from peak_resilience.resilience import CircuitBreaker


@pytest.fixture
def package_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("peak_resilience")
    level = logger.level
    yield logger
    logger.setLevel(level)
    logging.disable(logging.NOTSET)


def refuse_once(breaker: CircuitBreaker) -> None:
    breaker.force_open()
    with pytest.raises(CircuitBreakerError):
        breaker.call(lambda: None)()


def test_refusals_are_not_handed_to_python_while_debug_is_off(
    package_logger: logging.Logger,
) -> None:
    package_logger.setLevel(logging.INFO)
    assert _native.rejection_log_enabled() is False


def test_turning_the_package_logger_to_debug_logs_each_refusal(
    package_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    package_logger.setLevel(logging.DEBUG)
    assert _native.rejection_log_enabled() is True
    with caplog.at_level(logging.DEBUG, logger="peak_resilience"):
        refuse_once(CircuitBreaker(name="orders"))
    refused = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(refused) == 1
    assert "orders" in refused[0].getMessage()


def test_logging_disable_turns_the_refusal_hook_off_again(
    package_logger: logging.Logger,
) -> None:
    package_logger.setLevel(logging.DEBUG)
    logging.disable(logging.CRITICAL)
    assert _native.rejection_log_enabled() is False
    logging.disable(logging.NOTSET)
    assert _native.rejection_log_enabled() is True

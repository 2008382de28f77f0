"""The guide's Debugging section: refusals are logged at DEBUG once someone turns it up,
and cost no Python call while nobody does."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from peak_resilience import _logging, _native
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


def test_a_refusal_storm_logs_ten_lines_a_second_and_counts_the_rest_in_the_next_line(
    package_logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_000.0]
    monkeypatch.setattr(_logging, "_clock", lambda: now[0])
    package_logger.setLevel(logging.DEBUG)
    breaker = CircuitBreaker(name="storm")
    breaker.force_open()
    guarded = breaker.call(lambda: None)

    def refuse(times: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="peak_resilience"):
            for _ in range(times):
                with pytest.raises(CircuitBreakerError):
                    guarded()
        return [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]

    first_second = refuse(1_000)
    now[0] += 1.0
    next_second = refuse(64)

    assert len(first_second) == _logging.REFUSAL_LINES_PER_SECOND
    assert all("storm" in line for line in first_second)
    # The next second's lines begin within 64 refusals (the clock is read that often past
    # the lines), the first counting every refusal not logged since the last line.
    assert len(next_second) == _logging.REFUSAL_LINES_PER_SECOND
    unlogged = int(next_second[0].rsplit("(and ", 1)[1].split()[0])
    late = unlogged - (1_000 - _logging.REFUSAL_LINES_PER_SECOND)
    assert 0 <= late < 64
    assert not any("more refused" in line for line in next_second[1:])


def test_each_name_has_its_own_lines(
    package_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    package_logger.setLevel(logging.DEBUG)
    breakers = [CircuitBreaker(name=f"venue-{i}") for i in range(3)]
    with caplog.at_level(logging.DEBUG, logger="peak_resilience"):
        for breaker in breakers:
            for _ in range(_logging.REFUSAL_LINES_PER_SECOND):
                refuse_once(breaker)
    refused = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(refused) == 3 * _logging.REFUSAL_LINES_PER_SECOND

"""os.fork() after limiters exist: an in-process limiter is copied into the child with the
tokens it had at the fork, and from then on the two budgets are independent (use the shared
backend for one budget across processes)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis_server import free_port

from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_copy_of_the_in_process_budget() -> None:
    limiter = RateLimiter(10, 3600)
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=3600)
    for _ in range(4):
        limiter.acquire()
    breaker.open_for(3600)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running pytest's exit
        try:
            admitted = sum(limiter.acquire() for _ in range(20))
            os.write(write, f"{admitted} {int(breaker.state)}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_admitted, child_state = (int(x) for x in pipe.read().split())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_admitted == 6, "the child starts from the parent's 6 remaining tokens"
    assert child_state == CircuitState.OPEN
    # The parent's budget is untouched by what the child spent.
    assert sum(limiter.acquire() for _ in range(20)) == 6


def _in_a_forked_child(report: Callable[[], str]) -> str:
    """Runs ``report`` in a forked child and returns what it wrote."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(30)  # a child that hangs dies: the test fails instead of waiting
            os.write(write, report().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        written = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return written


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_health_checks_run_in_a_forked_child_after_the_parent_ran_them() -> None:
    from peak_resilience.resilience import health_check

    health_check.register("slow", lambda: (time.sleep(0.2), True)[1], timeout=2.0)
    try:
        # The parent's worker threads are now idle: the child inherits their count, not them.
        assert health_check.run_all()["slow"]["healthy"]
        results = json.loads(
            _in_a_forked_child(lambda: json.dumps(health_check.run_all(critical_only=True)))
        )
    finally:
        health_check.unregister("slow")
    assert {name: r["healthy"] for name, r in results.items()} == dict.fromkeys(results, True)
    assert results["slow"]["message"] == "ok"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_health_server_stopped_in_a_forked_child_keeps_serving_in_the_parent() -> None:
    from peak_resilience.http import start_health_server

    server = start_health_server(port=0)
    try:
        # Without its own thread to wait for, the child's stop() would block for ever.
        assert _in_a_forked_child(lambda: (server.stop(), "stopped")[1]) == "stopped"
        assert _get(server.port, "/livez") == (200, {"status": "alive"})
    finally:
        server.stop()


APP = """
import time

from flask import Flask

from peak_resilience.integrations.flask import install
from peak_resilience.resilience import health_check


def database() -> tuple[bool, str]:
    time.sleep(0.3)  # a slow ping
    return True, "database answers"


health_check.register("database", database, timeout=2.0)
assert health_check.is_system_healthy(), "checked once at boot, in the master"

app = Flask(__name__)
install(app)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_health_answers_200_in_the_workers_of_a_preloaded_gunicorn_app(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "app:app",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answers = [_get(port, path) for path in ("/readyz", "/health/detailed") * 3]
                break
            except OSError:
                assert process.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "gunicorn never answered"
                time.sleep(0.1)
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert [status for status, _ in answers] == [200] * 6, answers
    for _, report in answers[1::2]:
        assert report["checks"]["database"] == {
            "healthy": True,
            "message": "database answers",
            "duration_ms": report["checks"]["database"]["duration_ms"],
            "critical": True,
        }


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()

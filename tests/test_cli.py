"""The command line: clear one-line errors, exit codes, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # the package depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peak_resilience", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_version_prints_the_package_version() -> None:
    from peak_resilience import __version__

    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"peak-resilience {__version__}"


def test_help_lists_the_commands() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("demo", "config"):
        assert command in result.stdout


def test_config_validate_accepts_the_shipped_config() -> None:
    result = cli("config", "validate", str(ROOT / "config.toml"))
    assert result.returncode == 0
    assert "is valid" in result.stdout
    assert "portfolio" in result.stdout


def test_config_validate_names_a_typod_key_with_a_suggestion(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[resilience.live]\ncircuit_breaker_treshold = 2\n")
    result = cli("config", "validate", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert str(bad) in result.stderr
    assert "[resilience.live]" in result.stderr
    assert "did you mean 'circuit_breaker_threshold'" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_validate_of_a_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = cli("config", "validate", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_gives_each_value_with_its_source(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[resilience]\ncircuit_breaker_threshold = 4\nhealth_token = "s3cret"\n'
        'redis_url = "redis://user:hunter2@127.0.0.1:6379/0"\n'
        "[resilience.live]\nrate_limit_requests = 30\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PEAK_TRADE_LIVE__CIRCUIT_BREAKER_TIMEOUT": "120"}
    result = cli("config", "show", str(path), "--json", env=env)
    assert result.returncode == 0, result.stderr
    tables = json.loads(result.stdout)
    live = tables["resilience.live"]
    assert live["rate_limit_requests"] == {"value": 30, "source": f"{path} [resilience.live]"}
    assert live["circuit_breaker_threshold"] == {"value": 4, "source": f"{path} [resilience]"}
    assert live["circuit_breaker_timeout"] == {
        "value": 120.0,
        "source": "environment PEAK_TRADE_LIVE__CIRCUIT_BREAKER_TIMEOUT",
    }
    assert live["half_open_max_calls"]["source"] == "default"
    # Secrets never printed.
    assert "s3cret" not in result.stdout
    assert "hunter2" not in result.stdout
    assert tables["resilience"]["health_token"]["value"] == "***"


@pytest.mark.parametrize("args", [["frobnicate"], ["config"], ["config", "show"]])
def test_bad_usage_is_one_clear_line_and_a_non_zero_exit(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("peak-resilience")
    assert "Traceback" not in result.stderr


def test_the_demo_shows_the_breaker_opening_and_recovering_and_the_limiter_rejecting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "peak_resilience", "demo", "--duration", "4", "--plain"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Said up front: the spikes, the outage window, the exchange's own limit.
    assert "latency spikes (20 ms on ~5% of orders)" in out
    assert "is down from 1.2s to 2.0s" in out
    assert "allows 50 orders/s (429 past that)" in out
    assert "[resilience.demo] from config.toml" in out
    assert "latency spike: " in out  # and then shown
    assert "CLOSED -> OPEN" in out
    assert "HALF_OPEN -> CLOSED" in out
    done = out.splitlines()[-1]
    assert done.startswith("done: filled ")
    assert "exchange 429s 0" in done, "our limiter keeps the loop under the exchange's limit"
    assert "rate-limited 0 " not in done
    assert result.stderr == ""


def test_check_runs_the_health_checks_once_and_exits_0_when_healthy() -> None:
    result = cli("check", "--config", str(ROOT / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "resilience" in result.stdout
    assert result.stdout.strip().endswith("status: healthy")


def test_check_of_an_unreachable_server_is_unhealthy_exit_2() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: refused
        result = cli("check", "--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "cannot reach" in result.stderr


def test_serve_answers_health_and_stops_on_sigterm() -> None:
    import signal
    import time
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "peak_resilience", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "serving http://127.0.0.1:PORT/health, ..."
        url = line.split()[1].rsplit("/health", 1)[0]
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
    finally:
        server.kill()
        server.wait()


def test_serve_on_a_port_in_use_is_one_line_and_a_non_zero_exit() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        result = cli("serve", "--port", str(sock.getsockname()[1]))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_prints_the_quick_ratio_table() -> None:
    result = cli("bench", "--number", "2000")
    assert result.returncode == 0, result.stderr
    for row in ("acquire()", "breaker-guarded no-op", "call refused by an open circuit"):
        assert row in result.stdout


def test_serve_and_check_report_the_hosts_shared_breakers_and_limiters(tmp_path: Path) -> None:
    import time
    import urllib.request

    from peak_resilience.config import configure
    from peak_resilience.resilience_helpers import (
        create_module_circuit_breaker,
        create_module_rate_limiter,
    )
    from peak_resilience.testing import fresh_resilience

    path = tmp_path / "config.toml"
    path.write_text(
        "[resilience.live]\n"
        'circuit_breaker_backend = "shared"\nrate_limit_backend = "shared"\n'
        f'shared_dir = "{tmp_path / "shm"}"\nrate_limit_requests = 5\n'
    )
    with fresh_resilience():
        # What a worker process of the host did: an open breaker, a spent budget.
        configure(path, environ={})
        create_module_circuit_breaker("live", "submit_order").open_for(600)
        limiter = create_module_rate_limiter("live")
        assert sum(limiter.acquire() for _ in range(10)) == 5

        checked = cli("check", "--config", str(path), env={"PATH": "/usr/bin:/bin"})
        assert checked.returncode == 1, checked.stdout + checked.stderr  # degraded
        assert "live.submit_order" in checked.stdout

        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peak_resilience",
                "serve",
                "--config",
                str(path),
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[1].rsplit("/health", 1)[0]
            assert "breaker live.submit_order" in server.stdout.readline()
            deadline = time.monotonic() + 10
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health/prometheus", timeout=2) as reply:
                        exposition = reply.read().decode()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the server never answered"
                    time.sleep(0.05)
        finally:
            server.kill()
            server.wait()
    lines = exposition.splitlines()
    assert 'peak_trade_circuit_breaker_state{name="live.submit_order"} 2' in lines
    assert 'peak_trade_rate_limit_hits_total{limiter="live",endpoint="default"} 10' in lines
    assert 'peak_trade_rate_limit_rejections_total{limiter="live",endpoint="default"} 5' in lines


#: Bad arguments of every command, each with what the one-line error must name.
BAD_ARGUMENTS = [
    (["serve", "--port", "99999"], "argument --port"),
    (["serve", "--port", "-1"], "argument --port"),
    (["serve", "--port", "http"], "argument --port"),
    (["serve", "--host", "999.1.1.1"], "argument --host"),
    (["serve", "--host", "no-such-host.invalid"], "argument --host"),
    (["serve", "--config", "/nonexistent/config.toml"], "/nonexistent/config.toml"),
    (["demo", "--port", "99999"], "argument --port"),
    (["demo", "--duration", "-1"], "argument --duration"),
    (["demo", "--duration", "0"], "argument --duration"),
    (["demo", "--duration", "inf"], "argument --duration"),
    (["demo", "--duration", "nan"], "argument --duration"),
    (["demo", "--config", "/nonexistent/config.toml"], "/nonexistent/config.toml"),
    (["bench", "--number", "0"], "argument --number"),
    (["bench", "--number", "-5"], "argument --number"),
    (["bench", "--number", "1.5"], "argument --number"),
    (["check", "--url", "notaurl"], "argument --url"),
    (["check", "--url", "http://[::1"], "argument --url"),
    (["check", "--url", "ftp://127.0.0.1/"], "argument --url"),
    (["check", "--url", "http://:9108"], "argument --url"),
    (["check", "--url", "http://127.0.0.1:99999"], "argument --url"),
    (["check", "--timeout", "0"], "argument --timeout"),
    (["check", "--timeout", "-3"], "argument --timeout"),
    (["check", "--config", "/nonexistent/config.toml"], "/nonexistent/config.toml"),
    (["config", "validate", "/"], "/"),
    (["config", "show", "/nonexistent/config.toml"], "/nonexistent/config.toml"),
    (["config", "show", str(ROOT / "config.toml"), "--format", "yaml"], "argument --format"),
]


@pytest.mark.parametrize(("args", "named"), BAD_ARGUMENTS, ids=" ".join)
def test_a_bad_argument_is_one_line_naming_it_and_exit_2(args: list[str], named: str) -> None:
    result = cli(*args)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert named in result.stderr


def test_a_file_that_cannot_be_written_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = cli("config", "init", str(tmp_path / "missing" / "config.toml"))
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert result.stderr == (
        f"peak-resilience: error: cannot write {tmp_path / 'missing' / 'config.toml'}: "
        "No such file or directory\n"
    )


def test_check_of_a_server_that_answers_no_health_report_is_unhealthy_exit_2() -> None:
    import http.server
    import threading

    class NotOurs(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotOurs) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            result = cli("check", "--url", f"http://127.0.0.1:{server.server_port}")
        finally:
            server.shutdown()
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert "did not answer a health report" in result.stderr


def test_serve_on_all_interfaces_without_a_token_warns_on_stderr() -> None:
    import signal

    server = subprocess.Popen(
        [sys.executable, "-m", "peak_resilience", "serve", "--host", "0.0.0.0", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("serving http://0.0.0.0:")
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=10)
    finally:
        server.kill()
        server.wait()
    assert stderr.startswith("peak-resilience: warning: health server on 0.0.0.0 without a token")


def test_config_validate_warns_on_a_misspelt_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[resilence]\ncircuit_breaker_threshold = 2\n[app]\nname = 'x'\n")
    result = cli("config", "validate", str(path))
    assert result.returncode == 0
    warnings = result.stderr.splitlines()
    assert any(
        "[resilence] is not read" in w and "did you mean [resilience]?" in w for w in warnings
    )
    assert any(
        w.endswith("[app] is not read by peak-resilience (only [resilience] is)") for w in warnings
    )
    assert any("no [resilience] table" in w for w in warnings)


def test_config_validate_of_a_file_with_resilience_prints_no_warning() -> None:
    result = cli("config", "validate", str(ROOT / "config.toml"))
    assert result.returncode == 0
    assert result.stderr == ""


def test_config_init_writes_the_documented_example_which_validates(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "peak_resilience", "config", "init"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    written = tmp_path / "config.toml"
    assert written.read_text() == (ROOT / "config.toml").read_text()
    assert cli("config", "validate", str(written)).returncode == 0


def test_config_init_into_a_directory_writes_config_toml_there(tmp_path: Path) -> None:
    assert cli("config", "init", str(tmp_path)).returncode == 0
    assert (tmp_path / "config.toml").read_text() == (ROOT / "config.toml").read_text()


def test_config_init_does_not_overwrite_a_file_without_force(tmp_path: Path) -> None:
    mine = tmp_path / "config.toml"
    mine.write_text("[resilience]\n")
    refused = cli("config", "init", str(mine))
    assert refused.returncode == 2
    assert "exists (--force to overwrite it)" in refused.stderr
    assert mine.read_text() == "[resilience]\n"
    assert cli("config", "init", str(mine), "--force").returncode == 0
    assert mine.read_text() == (ROOT / "config.toml").read_text()


def test_config_show_as_toml_is_a_file_with_the_same_settings(tmp_path: Path) -> None:
    from peak_resilience.config import load_config

    source = tmp_path / "source.toml"
    source.write_text(
        "[resilience]\ncircuit_breaker_timeout = 1.5\nrate_limits = ['10/1s', '100/1m']\n"
        "[resilience.live]\ncircuit_breaker_threshold = 2\nfail_safe_defaults = true\n"
    )
    result = cli("config", "show", str(source), "--format", "toml", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    shown = tmp_path / "shown.toml"
    shown.write_text(result.stdout)
    assert tomllib.loads(result.stdout)["resilience"]["live"]["circuit_breaker_threshold"] == 2
    original, reread = load_config(source, environ={}), load_config(shown, environ={})
    assert reread.globals == original.globals
    assert reread.module("live") == original.module("live")


def test_the_demo_answers_health_until_ctrl_c_then_prints_its_summary() -> None:
    import signal
    import urllib.request

    demo = subprocess.Popen(
        [sys.executable, "-m", "peak_resilience", "demo", "--duration", "120", "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # Ctrl-C as a terminal delivers it, even where this run inherited SIGINT ignored
        # (a background job of a non-interactive shell).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert demo.stdout is not None
        url = ""
        for _ in range(10):  # the header: a few lines, the health URL last
            line = demo.stdout.readline()
            if line.startswith("health endpoints: "):
                url = line.split()[2]
                break
        assert url.endswith("/health"), url
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200
        demo.send_signal(signal.SIGINT)
        rest, stderr = demo.communicate(timeout=30)
    finally:
        demo.kill()
        demo.wait()
    assert demo.returncode == 130
    assert "Traceback" not in stderr
    lines = rest.splitlines()
    assert lines[-2].startswith("interrupted (Ctrl-C) after ")
    assert lines[-1].startswith("done: filled ")

"""``peak-resilience serve`` and ``peak-resilience check``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from peak_resilience._cli import arguments
from peak_resilience._config.active import configure
from peak_resilience._health import health_check
from peak_resilience._http.endpoints import health_token
from peak_resilience._http.server import start_health_server
from peak_resilience._modules.host_state import attach_shared_state

__all__ = ["EXIT_CODES", "add_commands", "check", "serve"]

#: Exit codes of ``check``, by status.
EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def serve(args: argparse.Namespace) -> int:
    attached = attach_shared_state(configure(args.config))
    server = start_health_server(host=args.host, port=args.port, token=health_token())
    # Flushed: a server's output usually goes to a pipe or a log, read while it runs.
    print(
        f"serving {server.url}/health, /health/detailed, /health/metrics, /health/prometheus",
        flush=True,
    )
    if attached:
        print(f"host state from shared files: {', '.join(attached)}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
    print("stopped", flush=True)
    return 0


def _remote(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + "/health/detailed")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        if err.code != 503:  # 503 still carries the report of an unhealthy system
            raise OSError(f"{url} answered HTTP {err.code}") from None
        body = err.read()
    except urllib.error.URLError as err:
        raise OSError(f"cannot reach {url}: {err.reason}") from None
    except ValueError as err:  # http.client.InvalidURL: a URL the parser let through
        raise OSError(f"cannot ask {url}: {err}") from None
    try:
        report = json.loads(body)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise OSError(f"{url}/health/detailed did not answer a health report (is it ours?)")
    return report


def _local(config_path: str | None) -> dict[str, Any]:
    attach_shared_state(configure(config_path))
    results = health_check.run_all()
    return {"status": health_check.status_of(results), "checks": results}


def check(args: argparse.Namespace) -> int:
    try:
        report = _remote(args.url, args.token, args.timeout) if args.url else _local(args.config)
    except OSError as err:
        # A server that cannot be asked is as good as unhealthy.
        print(f"peak-resilience: error: {err}", file=sys.stderr)
        return EXIT_CODES["unhealthy"]
    checks: dict[str, dict[str, Any]] = report.get("checks", {})
    width = max((len(name) for name in checks), default=5)
    print(f"{'check':<{width}}  {'result':<9}  {'critical':<8}  {'ms':>7}  message")
    for name, result in sorted(checks.items()):
        outcome = "ok" if result["healthy"] else "FAILING"
        critical = "yes" if result["critical"] else "no"
        print(
            f"{name:<{width}}  {outcome:<9}  {critical:<8}  "
            f"{result['duration_ms']:7.1f}  {result['message']}"
        )
    status = str(report.get("status", "unhealthy"))
    print(f"status: {status}")
    return EXIT_CODES.get(status, 2)


def add_commands(commands: Any) -> None:
    serve_ = commands.add_parser("serve", help="serve the health and metrics endpoints")
    serve_.add_argument("--config", help="config.toml (default: $PEAK_TRADE_CONFIG, ./config.toml)")
    serve_.add_argument(
        "--host",
        type=arguments.host,
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1)",
    )
    serve_.add_argument(
        "--port", type=arguments.port, default=9108, help="port (default: 9108; 0: a free one)"
    )
    serve_.set_defaults(handler=serve)
    check_ = commands.add_parser(
        "check",
        help="run the health checks once: exit 0 healthy, 1 degraded, 2 unhealthy",
    )
    check_.add_argument("--config", help="config.toml (default: $PEAK_TRADE_CONFIG, ./config.toml)")
    check_.add_argument(
        "--url",
        type=arguments.url,
        help="ask a running server (e.g. http://127.0.0.1:9108) instead",
    )
    check_.add_argument("--token", help="bearer token for --url (default: none)")
    check_.add_argument(
        "--timeout", type=arguments.seconds, default=10.0, help="seconds to wait for --url"
    )
    # Whatever goes wrong, a probe must not read it as "degraded" (1).
    check_.set_defaults(handler=check, error_exit=EXIT_CODES["unhealthy"])

"""What the endpoints (listed in ``peak_resilience.http``) answer, before a server
writes it.

``HealthEndpoints`` routes a request, checks the bearer token in constant time and turns
a failing endpoint into a bare 500: no response carries a traceback or an exception's
text. The threaded server, the ASGI and the WSGI apps all answer through it.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from peak_resilience._config.active import active
from peak_resilience._config.environment import ENV_PREFIX
from peak_resilience._health import HealthCheckRegistry, health_check
from peak_resilience._metrics.recorder import Metrics
from peak_resilience._metrics.recorder import metrics as _process_metrics

__all__ = [
    "ALLOWED_METHODS",
    "PUBLIC_PATHS",
    "TOKEN_ENV",
    "HealthEndpoints",
    "Response",
    "endpoints_for",
    "health_token",
]

logger = logging.getLogger("peak_resilience.http")

TOKEN_ENV = f"{ENV_PREFIX}HEALTH_TOKEN"
#: Paths a load balancer or an orchestrator probes: never behind the token.
PUBLIC_PATHS = frozenset({"/health", "/livez", "/readyz"})
ALLOWED_METHODS = "GET, HEAD"


def health_token() -> str | None:
    """The configured bearer token: ``health_token`` from the configuration in force
    (``config.toml`` or ``PEAK_TRADE_HEALTH_TOKEN``), None (or empty) for none."""
    token = active().globals.health_token
    # The config layers the same variable over the file; reading it here as well covers
    # a configuration loaded before the variable was set.
    return token or os.environ.get(TOKEN_ENV) or None


@dataclass(frozen=True)
class Response:
    """What an endpoint answers, before a server adapter writes it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_line(self) -> str:
        """E.g. ``"503 Service Unavailable"`` (as WSGI wants it)."""
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def _json(status: int, payload: object) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(status, [("Content-Type", "application/json")], body)


class HealthEndpoints:
    """The endpoint logic, shared by the threaded server, the ASGI and the WSGI apps."""

    def __init__(
        self,
        token: str | None = None,
        *,
        checks: HealthCheckRegistry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``token``: the bearer token for the detailed endpoints (None: open);
        ``checks`` and ``metrics`` default to the process-wide ones."""
        self._token = token.encode() if token else None
        self._checks = health_check if checks is None else checks
        self._metrics = _process_metrics if metrics is None else metrics
        self._routes: dict[str, Callable[[Mapping[str, str]], Response]] = {
            "/health": self._health,
            "/health/detailed": self._detailed,
            "/health/metrics": self._metrics_json,
            "/health/prometheus": self._prometheus,
            "/livez": self._livez,
            "/readyz": self._readyz,
        }

    def paths_under(self, prefix: str) -> dict[str, str]:
        """Where a framework mounts each endpoint: the path under ``prefix`` ("" or, e.g.,
        "/ops") -> the endpoint's own path, which ``handle`` answers."""
        if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
            raise ValueError(f"prefix must be '' or start with '/', got {prefix!r}")
        prefix = prefix.rstrip("/")
        return {prefix + path: path for path in self._routes}

    @property
    def guarded(self) -> bool:
        """Whether a bearer token is required for the detailed endpoints."""
        return self._token is not None

    def handle(self, method: str, path: str, headers: Mapping[str, str]) -> Response:
        """Answers one request. ``headers`` are keyed in lower case; ``path`` may carry a
        query string, which is ignored."""
        if not isinstance(method, str) or not isinstance(path, str):
            # A malformed ASGI scope or WSGI environ: refused, never a traceback.
            response = _json(400, {"error": "bad request"})
            response.headers.append(("Content-Length", str(len(response.body))))
            return response
        route = self._routes.get(path.partition("?")[0])
        if route is None:
            response = _json(404, {"error": "not found"})
        elif method not in ("GET", "HEAD"):
            response = _json(405, {"error": "method not allowed"})
            response.headers.append(("Allow", ALLOWED_METHODS))
        elif not self._authorized(path.partition("?")[0], headers):
            response = _json(401, {"error": "unauthorized"})
            response.headers.append(("WWW-Authenticate", 'Bearer realm="peak-resilience"'))
        else:
            try:
                response = route(headers)
            except Exception:
                # The details go to the log; the client learns only that it failed.
                logger.exception("health endpoint %s failed", path)
                response = _json(500, {"error": "internal error"})
        response.headers.append(("Content-Length", str(len(response.body))))
        response.headers.append(("Cache-Control", "no-store"))
        if method == "HEAD":
            return Response(response.status, response.headers, b"")
        return response

    def _authorized(self, path: str, headers: Mapping[str, str]) -> bool:
        if self._token is None or path in PUBLIC_PATHS:
            return True
        authorization = headers.get("authorization", "")
        if not isinstance(authorization, str):
            return False
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time: how much of a guess matches must not show in the answer's timing.
        # (surrogateescape: a header that is not valid text is a wrong token, not an error)
        return hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"), self._token
        )

    def _health(self, headers: Mapping[str, str]) -> Response:
        status = self._checks.status()
        return _json(503 if status == "unhealthy" else 200, {"status": status})

    def _detailed(self, headers: Mapping[str, str]) -> Response:
        results = self._checks.run_all()
        status = self._checks.status_of(results)
        return _json(503 if status == "unhealthy" else 200, {"status": status, "checks": results})

    def _metrics_json(self, headers: Mapping[str, str]) -> Response:
        summary = self._metrics.get_summary()
        summary["events"] = self._metrics.get_snapshots(limit=100)
        return _json(200, summary)

    def _prometheus(self, headers: Mapping[str, str]) -> Response:
        body, content_type = self._metrics.exposition(headers.get("accept"), checks=self._checks)
        return Response(200, [("Content-Type", content_type)], body)

    def _livez(self, headers: Mapping[str, str]) -> Response:
        return _json(200, {"status": "alive"})

    def _readyz(self, headers: Mapping[str, str]) -> Response:
        ready = all(r["healthy"] for r in self._checks.run_all(critical_only=True).values())
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready"})


def endpoints_for(token: str | None) -> HealthEndpoints:
    """The process-wide endpoints behind ``token`` (None: the configured one)."""
    return HealthEndpoints(token if token is not None else health_token())

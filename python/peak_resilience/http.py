"""The health and metrics endpoints over HTTP: a background server, an ASGI app and a
WSGI app, all three answering through the same ``HealthEndpoints``.

- ``GET /health``: 200 ``{"status": "healthy" | "degraded"}`` or 503 ``{"status":
  "unhealthy"}`` (a critical check failed).
- ``GET /health/detailed``: every check with its outcome and duration.
- ``GET /health/metrics``: the metrics summary and recent events, as JSON.
- ``GET /health/prometheus``: the Prometheus exposition (OpenMetrics when asked for).
- ``GET /livez``: the process answers; ``GET /readyz``: the critical checks pass.

A bearer token (``token=``, else config ``health_token``, else the environment variable
``PEAK_TRADE_HEALTH_TOKEN``) guards everything but ``/health``, ``/livez`` and
``/readyz``. No response ever carries a traceback or an exception's text.
"""

from __future__ import annotations

from peak_resilience._http.asgi import ASGIApp, ASGIReceive, ASGIScope, ASGISend, asgi_app
from peak_resilience._http.endpoints import (
    ALLOWED_METHODS,
    PUBLIC_PATHS,
    TOKEN_ENV,
    HealthEndpoints,
    Response,
    health_token,
)
from peak_resilience._http.server import HealthServer, start_health_server
from peak_resilience._http.wsgi import WSGIApp, WSGIStartResponse, wsgi_app

__all__ = [
    "ALLOWED_METHODS",
    "PUBLIC_PATHS",
    "TOKEN_ENV",
    "ASGIApp",
    "ASGIReceive",
    "ASGIScope",
    "ASGISend",
    "HealthEndpoints",
    "HealthServer",
    "Response",
    "WSGIApp",
    "WSGIStartResponse",
    "asgi_app",
    "health_token",
    "start_health_server",
    "wsgi_app",
]

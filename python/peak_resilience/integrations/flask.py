"""Flask: ``install(app)``.

A view guarded by ``with_resilience`` (or a breaker or limiter) that is refused answers
429 (rate limit) or 503 (open circuit) with ``Retry-After`` and a small JSON body
instead of a 500 and a traceback; the health endpoints answer beside the app's views.
Needs ``flask``: ``pip install peak-resilience[flask]``.
"""

from __future__ import annotations

from collections.abc import Callable

import flask

from peak_resilience._http.endpoints import Response as Answer
from peak_resilience._http.endpoints import endpoints_for
from peak_resilience._http.refusals import REFUSALS, refusal_response

__all__ = ["install"]


def _answer(answer: Answer) -> flask.Response:
    response = flask.Response(answer.body, status=answer.status)
    response.headers.clear()
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def _refused(refusal: Exception) -> flask.Response:
    return _answer(refusal_response(refusal, flask.request.path))


def install(
    app: flask.Flask, *, health: bool = True, prefix: str = "", token: str | None = None
) -> None:
    """Makes ``app`` answer refusals as 429/503 with ``Retry-After`` and, with ``health``
    (the default), serve ``/health``, ``/health/detailed``, ``/health/metrics``,
    ``/health/prometheus``, ``/livez`` and ``/readyz`` under ``prefix`` (e.g. ``"/ops"``),
    the detailed ones behind ``token`` (default: the configured ``health_token``)."""
    for refusal in REFUSALS:
        app.register_error_handler(refusal, _refused)
    if not health:
        return
    endpoints = endpoints_for(token)

    def route(path: str) -> Callable[[], flask.Response]:
        def serve() -> flask.Response:
            request = flask.request
            headers = {name.lower(): value for name, value in request.headers.items()}
            return _answer(endpoints.handle(request.method, path, headers))

        return serve

    for mounted, path in endpoints.paths_under(prefix).items():
        app.add_url_rule(
            mounted,
            endpoint=f"peak_resilience:{path}",
            view_func=route(path),
            methods=["GET", "HEAD"],
        )

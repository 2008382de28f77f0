"""The endpoints as a WSGI app (gunicorn, or mounted beside Flask)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from peak_resilience._http.endpoints import endpoints_for

__all__ = ["WSGIApp", "WSGIStartResponse", "wsgi_app"]

WSGIStartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], WSGIStartResponse], Iterable[bytes]]


def wsgi_app(*, token: str | None = None) -> WSGIApp:
    """The endpoints as a WSGI app, for gunicorn or mounting beside Flask
    (``DispatcherMiddleware(app.wsgi_app, {"/ops": wsgi_app()})``)."""
    endpoints = endpoints_for(token)

    def app(environ: dict[str, Any], start_response: WSGIStartResponse) -> Iterable[bytes]:
        headers = {
            "authorization": environ.get("HTTP_AUTHORIZATION", ""),
            "accept": environ.get("HTTP_ACCEPT", ""),
        }
        path = environ.get("PATH_INFO", "") or "/"
        response = endpoints.handle(environ.get("REQUEST_METHOD", "GET"), path, headers)
        start_response(response.status_line, response.headers)
        return [response.body]

    return app

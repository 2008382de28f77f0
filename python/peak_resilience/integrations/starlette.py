"""FastAPI and Starlette: ``install(app)``.

A handler guarded by ``with_resilience`` (or a breaker or limiter) that is refused
answers 429 (rate limit) or 503 (open circuit) with ``Retry-After`` and a small JSON body
instead of a 500 and a traceback; the health endpoints answer beside the app's routes.
Needs ``starlette`` (FastAPI brings it): ``pip install peak-resilience[starlette]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from peak_resilience._http.endpoints import Response as Answer
from peak_resilience._http.endpoints import endpoints_for
from peak_resilience._http.refusals import REFUSALS, refusal_response

__all__ = ["install"]


def _answer(answer: Answer) -> Response:
    response = Response(content=answer.body, status_code=answer.status)
    # Ours, Content-Length included (a HEAD answer keeps the length of the GET body).
    response.raw_headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers
    ]
    return response


async def _refused(request: Request, refusal: Exception) -> Response:
    return _answer(refusal_response(refusal, request.url.path))


def install(
    app: Starlette, *, health: bool = True, prefix: str = "", token: str | None = None
) -> None:
    """Makes ``app`` (a FastAPI or Starlette application) answer refusals as 429/503 with
    ``Retry-After`` and, with ``health`` (the default), serve ``/health``,
    ``/health/detailed``, ``/health/metrics``, ``/health/prometheus``, ``/livez`` and
    ``/readyz`` under ``prefix`` (e.g. ``"/ops"``), the detailed ones behind ``token``
    (default: the configured ``health_token``). Checks run in the thread pool, never on
    the event loop."""
    for refusal in REFUSALS:
        app.add_exception_handler(refusal, _refused)
    if not health:
        return
    endpoints = endpoints_for(token)

    def route(path: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            headers = {name.lower(): value for name, value in request.headers.items()}
            answer = await run_in_threadpool(endpoints.handle, request.method, path, headers)
            return _answer(answer)

        return serve

    for mounted, path in endpoints.paths_under(prefix).items():
        app.add_route(mounted, route(path), methods=["GET", "HEAD"], include_in_schema=False)

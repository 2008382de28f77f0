"""The endpoints as an ASGI app (uvicorn, or mounted in FastAPI or Starlette)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from peak_resilience._http.endpoints import endpoints_for

__all__ = ["ASGIApp", "ASGIReceive", "ASGIScope", "ASGISend", "asgi_app"]

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]


def _route_path(scope: ASGIScope) -> str:
    # Mounted under a prefix (Starlette's Mount, uvicorn --root-path), the path still
    # starts with root_path: strip it, as Starlette's own routing does.
    path = scope.get("path", "") or "/"
    root = scope.get("root_path", "") or ""
    if not isinstance(path, str) or not isinstance(root, str):
        raise TypeError("path and root_path must be str")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :] or "/"
    return path


def asgi_app(*, token: str | None = None) -> ASGIApp:
    """The endpoints as an ASGI app, to run under uvicorn or to mount in FastAPI or
    Starlette (``app.mount("/ops", asgi_app())``). Checks run in the default executor,
    never on the event loop."""
    endpoints = endpoints_for(token)

    async def app(scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope.get("type") != "http":
            return
        try:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in scope.get("headers", ())
            }
            path = _route_path(scope)
        except (AttributeError, TypeError, ValueError):
            # A malformed scope (a server bug, not a client's): 400, never a traceback.
            headers, path = {}, None
        method = scope.get("method")
        if not isinstance(path, str) or not isinstance(method, str):
            response = endpoints.handle(None, "", headers)  # type: ignore[arg-type]
        elif path == "/livez":
            response = endpoints.handle(method, path, headers)
        else:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(None, endpoints.handle, method, path, headers)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in response.headers],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    return app

"""The ASGI app: the protocols' route declarations (``protocols.ROUTES``) over one HTTP layer and one data plane.

``App`` dispatches every HTTP request itself from the route list, inference routes (``fast``) first, before
Starlette's router and middleware stack: each handler from ``http.endpoint`` turns every exception into a response
itself, so the stack would add nothing but ~30 µs a request. Unknown paths and methods are answered by
``http.not_routed`` (404/405, logged and counted). Starlette still runs the lifespan, and ``app.routes`` lists the
same routes for introspection.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from .dataplane import DataPlane
from .http import AppConfig, Recorder, endpoint, match, not_routed
from .lmservice import LMService
from .openapi import openapi_spec
from .protocols import ROUTES
from .repository import Repository

__all__ = ["App", "AppConfig", "create_app"]

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(repo: Repository, config: AppConfig, metrics: Any, lm: Any = None) -> App:
    """Build the app serving ``repo`` and the language models ``lm`` (an ``lmservice.LMService``).

    Models load in the background once the server starts; language models answer under /v1 (OpenAI API).
    """
    plane = DataPlane(repo, lm if lm is not None else LMService(metrics=metrics), config, metrics)
    spec: list[bytes] = []

    def openapi() -> bytes:
        if not spec:  # built on first use: nothing at start-up pays for it
            spec.append(json.dumps(openapi_spec(bearer_required=bool(config.token))).encode())
        return spec[0]

    plane.openapi = openapi
    recorder = Recorder(config, metrics)
    handles = [(r, endpoint(r, plane, config, recorder)) for r in ROUTES]
    table = [(r.segments, r.method, h) for r, h in sorted(handles, key=lambda pair: not pair[0].fast)]
    by_path: dict[str, dict[str, Endpoint]] = {}
    for route, handle in handles:
        by_path.setdefault(route.path, {})[route.method] = handle
    routes = [StarletteRoute(path, _by_method(handlers), methods=list(handlers)) for path, handlers in by_path.items()]

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        await plane.start()
        try:
            yield
        finally:
            await plane.close()

    return App(table, recorder, routes=routes, lifespan=lifespan)


class App(Starlette):
    """Starlette, dispatching HTTP requests from the route table before its router and middleware stack."""

    def __init__(self, table: list[tuple[tuple[str, ...], str, Endpoint]], recorder: Recorder, **kw: Any) -> None:
        super().__init__(**kw)
        self.table, self.recorder = table, recorder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        parts = scope["path"].split("/")
        allowed: list[str] = []
        for segments, want, handle in self.table:
            params = match(segments, parts)
            if params is None:
                continue
            if want != method:
                allowed.append(want)
                continue
            scope["path_params"] = params
            response = await handle(Request(scope, receive))
            break
        else:
            response = not_routed(scope, allowed, self.recorder)
        await response(scope, receive, send)


def _by_method(handlers: dict[str, Endpoint]) -> Endpoint:
    """One Starlette route per path (so a 405's Allow header lists every method), dispatching on the method."""
    async def dispatch(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return dispatch

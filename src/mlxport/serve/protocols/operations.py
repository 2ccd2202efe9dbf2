"""Operations routes: Prometheus ``/metrics`` and this server's OpenAPI document, both open (no token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..dataplane import DataPlane
from ..http import Reply, Route


async def metrics(request: Request, plane: DataPlane) -> Response:
    data, ctype = plane.metrics.render(request.headers.get("accept"))
    return Response(data, media_type=ctype)


async def openapi(request: Request, plane: DataPlane) -> Response:
    return Response(plane.openapi(), media_type="application/json")


ROUTES: tuple[Route, ...] = (
    Route("GET", "/metrics", metrics, "Prometheus metrics (OpenMetrics when the Accept header asks for it).",
          "metrics", {200: Reply("Exposition text.", text=("text/plain", "application/openmetrics-text"))},
          tag="operations", open=True),
    Route("GET", "/openapi.json", openapi, "This document.", "openapi",
          {200: Reply("OpenAPI 3.0.3.", {"type": "object"})}, tag="operations", open=True),
)

"""The one HTTP layer of the server: route declarations, auth, bounded bodies, error mapping, metrics, access log.

Every protocol (``protocols/``) is a list of ``Route`` declarations; ``endpoint`` wraps each route's handler with
the bearer-token check, the mapping of typed ``ServeError`` exceptions to a status and an error body, the request
metric and the JSON access-log line, and ``not_routed`` answers unknown paths and methods the same way (404 or 405,
logged and counted). Handlers read bodies with ``read_body`` (one Content-Length rule for every route). The
OpenAPI document (``openapi.py``) is built from the same declarations, so a route exists in one place.
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .errors import InvalidInput, PayloadTooLarge, ServeError, Unauthorized

server_log = logging.getLogger("mlxport.serve")

Handler = Callable[[Request, Any], Awaitable[Response]]
ErrorBody = Callable[[ServeError], dict[str, Any]]


@dataclass
class AppConfig:
    """Per-request limits and switches."""

    token: str | None = None
    max_body_bytes: int = 6 * 2**20
    max_concurrency: int = 512
    request_timeout_s: float = 60.0
    poll_interval_s: float = 0.0
    grace_s: float = 30.0
    access_log: bool = True


def plain_error(exc: ServeError) -> dict[str, Any]:
    """The error body of every route outside /v1: ``{"error": "<message>"}``."""
    return {"error": str(exc)}


# ---------------------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Body:
    """A route's request body, for the OpenAPI document (the handler parses it itself).

    Attributes:
        schema: the JSON body's component schema name (``schemas.py``), or an inline schema.
        binary: media types read as raw bytes.
        required: whether a body must be sent.
        description: what the body holds.
    """

    schema: str | dict[str, Any]
    binary: tuple[str, ...] = ()
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Reply:
    """A documented answer that is not an error body.

    Attributes:
        description: what the answer means.
        schema: the JSON body's component schema name, or an inline schema (None: no JSON body).
        binary: media types answered as raw bytes.
        text: media types answered as plain text (metrics, event streams).
        headers: documented response headers.
    """

    description: str
    schema: str | dict[str, Any] | None = None
    binary: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Header:
    """A documented request header."""

    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Route:
    """One route of one protocol: what it answers, how, and what the OpenAPI document says of it.

    Attributes:
        method: HTTP method ("GET", "POST", "DELETE").
        path: Starlette-style path with ``{param}`` segments (each matches one non-empty segment).
        handler: ``async (request, plane) -> Response``; raises ``ServeError`` for every refusal.
        summary: one line for the OpenAPI document.
        protocol: the ``protocol`` label of the request metric ("sagemaker", "v2", "openai", ...).
        tag: the OpenAPI tag (defaults to ``protocol``).
        replies: status -> documented answer (2xx, and 503 where it has its own body).
        errors: documented error statuses (401 is added for every route that asks for the token).
        request: the request body, if any.
        headers: documented request headers.
        description: longer text for the OpenAPI document.
        open: True for probes, scrapers and the document itself: no bearer token asked.
        fast: dispatched before any other route (the inference hot paths).
        error_body: the error body shape (OpenAI's for /v1).
        error_schema: the component schema of that shape.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    protocol: str
    replies: dict[int, Reply]
    errors: tuple[int, ...] = ()
    tag: str = ""
    request: Body | None = None
    headers: tuple[Header, ...] = ()
    description: str = ""
    open: bool = False
    fast: bool = False
    error_body: ErrorBody = plain_error
    error_schema: str = "Error"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


def match(segments: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    """Path params when a path split on "/" fits a route's ``segments`` (``{param}``: one non-empty segment)."""
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(segments, parts):
        if want.startswith("{"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


# ------------------------------------------------------------------------------------------- requests


def check_token(request: Request, token: str) -> None:
    """Raise ``Unauthorized`` unless the request carries ``Authorization: Bearer <token>``."""
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 past ``limit`` bytes (declared or streamed).

    Raises:
        InvalidInput: the Content-Length header is not a number of bytes.
        PayloadTooLarge: the body is longer than ``limit``.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"Content-Length must be a number of bytes; got '{declared[:40]}'")
        if int(declared) > limit:
            raise PayloadTooLarge(too_large(int(declared), limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(size: int, limit: int) -> str:
    """The 413 message: the size, the limit, and how to send less."""
    return (f"the body is {size} bytes, over the limit of {limit} bytes; send fewer samples per request, use "
            "binary tensors (application/x-npy or the v2 binary extension), or raise --max-body-size")


def json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object body (400 for anything else)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"the body must be a JSON object; got {type(payload).__name__}")
    return payload


def labels_of(request: Request) -> dict[str, Any]:
    """The request's log and metric labels: ``model``, ``version`` and any extra access-log fields."""
    return request.scope.setdefault("mlxport", {"model": "", "version": ""})


# ------------------------------------------------------------------------------------------ responses


class StreamResponse(StreamingResponse):
    """A streamed answer whose access-log line and metric are written when the stream ends (``on_close``)."""

    on_close: Callable[[str | None], None] | None = None


def error_response(exc: ServeError, body: ErrorBody = plain_error) -> Response:
    """The JSON error answer of ``exc``: its status, its headers (Retry-After, WWW-Authenticate), ``body(exc)``."""
    return JSONResponse(body(exc), status_code=exc.status, headers=exc.headers)


class Recorder:
    """Writes the request metric and the access-log line of every answered request."""

    def __init__(self, config: AppConfig, metrics: Any) -> None:
        self.metrics, self.access_log = metrics, config.access_log

    def finish(self, scope: dict[str, Any], labels: dict[str, Any], protocol: str, status: int, start: float,
               size: int | None) -> None:
        """Count the request (model "" when it named none) and write its access-log line."""
        seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.request(labels["model"], labels["version"], protocol, status, seconds)
        if self.access_log:
            write_access(scope, status, seconds, labels, size)


def write_access(scope: dict[str, Any], status: int, seconds: float, labels: dict[str, Any],
                 size: int | None) -> None:
    """One JSON line per request on stderr, built by hand: json.dumps + logging cost ~60 µs a request."""
    client = scope.get("client")
    model = f'"{labels["model"]}"' if labels["model"] else "null"  # names are validated: no quoting needed
    version = f'"{labels["version"]}"' if labels["version"] else "null"
    extra = "" if len(labels) == 2 else "".join(  # only /v1 adds fields (tokens, stream, outcome)
        f",{json.dumps(k)}:{json.dumps(v)}" for k, v in labels.items() if k not in ("model", "version"))
    _stderr_write(
        f'{{"ts":{time.time():.3f},"method":"{scope["method"]}","path":{json.dumps(scope["path"])},'
        f'"status":{status},"ms":{seconds * 1000:.3f},"model":{model},"version":{version},'
        f'"bytes_out":{size if size is not None else "null"},'
        f'"client":{json.dumps(client[0]) if client else "null"}{extra}}}\n')


def _stderr_write(line: str) -> None:
    try:
        sys.stderr.write(line)
    except (OSError, ValueError):  # a closed or broken stderr must not fail the request
        pass


def endpoint(route: Route, plane: Any, config: AppConfig, recorder: Recorder) -> Callable[[Request], Awaitable[Response]]:
    """The ASGI-level handler of ``route``: token, handler, error mapping, metric and access log.

    Args:
        route: the declaration.
        plane: the data plane handed to the route's handler.
        config: token and access-log switch.
        recorder: metrics and access log.

    Returns:
        ``async (request) -> Response``; it never raises.
    """
    fn, protocol, to_body = route.handler, route.protocol, route.error_body
    token = None if route.open else config.token

    async def handle(request: Request) -> Response:
        start = time.perf_counter()
        labels = labels_of(request)
        try:
            if token:
                check_token(request, token)
            response = await fn(request, plane)
        except ServeError as exc:
            response = error_response(exc, to_body)
        except Exception as exc:  # noqa: BLE001 - last line of defence: a 500 with the message, never a crash
            server_log.exception("unexpected error on %s %s", request.method, request.url.path)
            response = error_response(ServeError(f"internal error: {type(exc).__name__}: {exc}"), to_body)
        if isinstance(response, StreamResponse):
            def closed(outcome: str | None) -> None:
                if outcome is not None:
                    labels["outcome"] = outcome
                recorder.finish(request.scope, labels, protocol, response.status_code, start, None)

            response.on_close = closed
        else:
            recorder.finish(request.scope, labels, protocol, response.status_code, start, len(response.body))
        return response

    handle.__name__ = getattr(fn, "__name__", "handle")
    return handle


def not_routed(scope: dict[str, Any], allowed: list[str], recorder: Recorder) -> Response:
    """The 404 (no route) or 405 (``allowed`` lists the methods the path has) answer, counted and logged."""
    start = time.perf_counter()
    method, path = scope["method"], scope["path"]
    if allowed:
        response: Response = JSONResponse({"error": f"{method} is not allowed on {path}"}, status_code=405,
                                          headers={"Allow": ", ".join(allowed)})
    else:
        response = JSONResponse({"error": f"no route {method} {path}; see GET /openapi.json"}, status_code=404)
    recorder.finish(scope, {"model": "", "version": ""}, "http", response.status_code, start, len(response.body))
    return response

"""OpenAPI 3.0.3 description of every route the server answers (served at ``GET /openapi.json``).

Built from the protocols' route declarations (``protocols.ROUTES``: path, method, summary, request body, answers,
error statuses, auth) and the component schemas of ``schemas.py``, so the document and the app cannot disagree
on which routes exist.
"""

from __future__ import annotations

from typing import Any

from .http import Body, Reply, Route
from .protocols import ROUTES as DECLARED
from .schemas import (ERROR_DESCRIPTIONS, NAME_PATTERN, SAGEMAKER_MEDIA_TYPES, V2_DATATYPES, VERSION_PATTERN,
                      binary, components, ref)

__all__ = ["NAME_PATTERN", "OPEN_ROUTES", "ROUTES", "SAGEMAKER_MEDIA_TYPES", "V2_DATATYPES", "VERSION_PATTERN",
           "openapi_spec"]

ROUTES: tuple[tuple[str, str], ...] = tuple((r.method, r.path) for r in DECLARED)
# Routes that never ask for the bearer token (probes and scrapers).
OPEN_ROUTES: frozenset[tuple[str, str]] = frozenset((r.method, r.path) for r in DECLARED if r.open)
TAGS = ("sagemaker", "v2", "repository", "operations", "openai")


def openapi_spec(*, bearer_required: bool = False) -> dict[str, Any]:
    """Build the OpenAPI 3.0.3 document of the server.

    Args:
        bearer_required: True when the server runs with a token (``--token``): every route except
            probes, metrics and this document then requires ``Authorization: Bearer <token>``. False
            documents the token as optional.

    Returns:
        A fresh dict (callers may change it) ready for ``json.dumps``.
    """
    from .. import __version__

    paths: dict[str, dict[str, Any]] = {}
    for route in DECLARED:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mlxport serve",
            "version": __version__,
            "description": "SageMaker and Open Inference Protocol v2 (KServe v2 / Triton) endpoints over one "
                           'data plane. Every error body is {"error": "<message>"}, except under /v1 (the '
                           "OpenAI-compatible API for exported language models), where errors have OpenAI's "
                           'shape {"error": {"message", "type", "param", "code"}}.',
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in TAGS],
        "security": [{"bearerAuth": []}] if bearer_required else [{}, {"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "Set with --token or MLXPORT_TOKEN."}},
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary}
    if route.description:
        op["description"] = route.description
    params = _path_params(route.path) + [
        {"name": h.name, "in": "header", "required": False, "description": h.description, "schema": h.schema}
        for h in route.headers]
    if params:
        op["parameters"] = params
    if route.request is not None:
        op["requestBody"] = _request(route.request)
    responses = {str(code): _reply(reply) for code, reply in route.replies.items()}
    for code in sorted({*route.errors, *(() if route.open else (401,))}):
        responses.setdefault(str(code), _error(code, route.error_schema))
    op["responses"] = responses
    op["operationId"] = _operation_id(route.method, route.path)
    op["tags"] = [route.tag or route.protocol]
    if route.open:
        op["security"] = []
    return op


def _content(schema: str | dict[str, Any] | None, binary_types: tuple[str, ...],
             text_types: tuple[str, ...] = ()) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if schema is not None:
        content["application/json"] = {"schema": ref(schema) if isinstance(schema, str) else schema}
    content.update({t: binary() for t in binary_types})
    content.update({t: {"schema": {"type": "string"}} for t in text_types})
    return content


def _request(body: Body) -> dict[str, Any]:
    out: dict[str, Any] = {"required": body.required}
    if body.description:
        out["description"] = body.description
    out["content"] = _content(body.schema, body.binary)
    return out


def _reply(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        out["headers"] = reply.headers
    out["content"] = _content(reply.schema, reply.binary, reply.text)
    return out


def _error(code: int, schema: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": ERROR_DESCRIPTIONS[code],
                                "content": {"application/json": {"schema": ref(schema)}}}
    if code == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    elif code == 503:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                               "schema": {"type": "integer", "minimum": 0}}}
    return response


def _path_params(path: str) -> list[dict[str, Any]]:
    params = []
    for key, description, schema in (
        ("{name}", "Model name.", {"type": "string", "pattern": NAME_PATTERN, "maxLength": 128}),
        ("{model}", "Model name.", {"type": "string", "pattern": NAME_PATTERN, "maxLength": 128}),
        ("{version}", "Model version (a folder number).", {"type": "string", "pattern": VERSION_PATTERN}),
    ):
        if key in path:
            params.append({"name": key[1:-1], "in": "path", "required": True,
                           "description": description, "schema": schema})
    return params


def _operation_id(method: str, path: str) -> str:
    parts = [p.strip("{}") for p in path.strip("/").replace(".", "_").split("/") if p]
    return "_".join([method.lower(), *parts]) if parts else method.lower()

"""SageMaker's inference contract (``/ping``, ``/invocations``) and multi-model API (``/models``), as route declarations.

Bodies are JSON, ``.npy``, ``.npz`` or raw bytes (``codec.decode_sagemaker``); the Accept header picks the answer's
type. Every route runs through the HTTP layer (``http.endpoint``) and the data plane.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import codec
from ..dataplane import DataPlane
from ..errors import InvalidInput
from ..http import Body, Header, Reply, Route, json_object, labels_of, read_body
from ..repository import ModelEntry, ServedModel
from ..schemas import SAGEMAKER_MEDIA_TYPES

PROTOCOL = "sagemaker"
INFER_ERRORS = (400, 404, 406, 413, 415, 500, 503, 504)


async def ping(request: Request, plane: DataPlane) -> Response:
    if plane.ready():
        return JSONResponse({"status": "healthy"})
    return JSONResponse({"status": "loading" if plane.loading() else "unhealthy", "models": plane.not_ready()},
                        status_code=503)


async def infer(request: Request, plane: DataPlane, model: ServedModel) -> Response:
    """Decode the body for ``model``, run it, encode the outputs as the Accept header asks."""
    labels = labels_of(request)
    labels["model"], labels["version"] = model.name, model.version
    body = await read_body(request, plane.config.max_body_bytes)
    feed = await plane.offload(len(body), codec.decode_sagemaker, body, request.headers.get("content-type"),
                               model.inputs)
    model, outputs = await plane.run(labels, model, feed)
    data, ctype = await plane.offload(sum(o.nbytes for o in outputs), codec.encode_sagemaker, outputs,
                                      [o.name for o in model.outputs], request.headers.get("accept"))
    return Response(data, media_type=ctype)


async def invocations(request: Request, plane: DataPlane) -> Response:
    target = request.headers.get("x-amzn-sagemaker-target-model")
    if target:
        return await infer(request, plane, plane.model(target.removesuffix(".tar.gz").rsplit("/", 1)[-1]))
    return await infer(request, plane, plane.sole_model())


async def invoke(request: Request, plane: DataPlane) -> Response:
    return await infer(request, plane, plane.model(request.path_params["name"]))


async def list_models(request: Request, plane: DataPlane) -> Response:
    entries = sorted(plane.repo.entries.values(), key=lambda e: e.name)
    return JSONResponse({"models": [_describe(e) for e in entries if not e.unloaded]})


async def add_model(request: Request, plane: DataPlane) -> Response:
    payload = json_object(await read_body(request, plane.config.max_body_bytes))
    name, url = payload.get("model_name"), payload.get("url")
    if not isinstance(name, str) or not isinstance(url, str):
        raise InvalidInput('the body must be {"model_name": str, "url": str}; got keys '
                           f"{', '.join(sorted(payload)) or 'none'}")
    model = await plane.repo.add_model(name, url)
    return JSONResponse({"status": f"model '{name}' loaded", "modelName": name, "version": model.version})


async def describe_model(request: Request, plane: DataPlane) -> Response:
    entry = plane.repo.entry(request.path_params["name"])
    if entry.unloaded:
        plane.repo.get(entry.name)  # raises the "unloaded" 404
    return JSONResponse(_describe(entry))


async def delete_model(request: Request, plane: DataPlane) -> Response:
    name = request.path_params["name"]
    await plane.repo.unload(name, forget=True)
    return JSONResponse({"status": f"model '{name}' unloaded"})


def _describe(entry: ModelEntry) -> dict[str, Any]:
    url = str(entry.root if entry.root is not None else entry.artifact)
    return {"modelName": entry.name, "modelUrl": url, "version": entry.default,
            "state": "READY" if entry.default is not None else "LOADING"}


def _infer_route(path: str, handler: Any, summary: str, target_header: bool) -> Route:
    headers = [Header("X-Amzn-SageMaker-Custom-Attributes", "Forwarded by SageMaker; ignored.", {"type": "string"})]
    if target_header:
        headers.insert(0, Header("X-Amzn-SageMaker-Target-Model", "Model to run (a name, or 'name.tar.gz' / "
                                 "'path/name.tar.gz'); needed when more than one model is loaded.", {"type": "string"}))
    return Route(
        "POST", path, handler, summary, PROTOCOL, fast=True, headers=tuple(headers), errors=INFER_ERRORS,
        description="The Accept header picks the response type (application/json when absent or */*).",
        request=Body("SageMakerJSONRequest", SAGEMAKER_MEDIA_TYPES[1:], description=(
            "application/json: see SageMakerJSONRequest. application/x-npy: one np.save'd array (one-input model). "
            "application/x-npz: np.savez archive keyed by input name. application/octet-stream: raw little-endian "
            "elements of the single input's dtype, reshaped to (-1, *fixed dims). Pickled arrays are refused.")),
        replies={200: Reply("The model's outputs.", "SageMakerJSONResponse", SAGEMAKER_MEDIA_TYPES[1:])})


ROUTES: tuple[Route, ...] = (
    Route("GET", "/ping", ping, "SageMaker health check: 200 only when every model is loaded and warmed.", PROTOCOL,
          {200: Reply("Healthy.", "Ping"), 503: Reply("Loading or a model failed to load.", "Ping")}, open=True),
    _infer_route("/invocations", invocations, "Run the only model, or the one named by the "
                 "X-Amzn-SageMaker-Target-Model header", True),
    Route("GET", "/models", list_models, "List loaded models (SageMaker multi-model API).", PROTOCOL,
          {200: Reply("Models.", "SageMakerModelList")}),
    Route("POST", "/models", add_model, "Load a model from a local path (SageMaker multi-model API).", PROTOCOL,
          {200: Reply("Loaded and warmed.", "SageMakerStatus")}, (400, 403, 409, 413, 415, 500, 507),
          request=Body("SageMakerLoadRequest")),
    Route("GET", "/models/{name}", describe_model, "Describe a loaded model.", PROTOCOL,
          {200: Reply("The model.", "SageMakerModel")}, (400, 404)),
    Route("DELETE", "/models/{name}", delete_model, "Unload a model and forget its name.", PROTOCOL,
          {200: Reply("Unloaded.", "SageMakerStatus")}, (400, 404)),
    _infer_route("/models/{name}/invoke", invoke, "Run the named model", False),
)

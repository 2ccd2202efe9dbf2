"""The Open Inference Protocol v2 (KServe v2 / Triton): health, metadata, infer, and repository control.

Infer bodies are JSON, or a JSON header followed by raw tensors (the binary tensor extension,
``Inference-Header-Content-Length``); ``codec.decode_v2`` / ``codec.encode_v2`` read and write them.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import __version__
from .. import codec
from ..dataplane import DataPlane
from ..errors import InvalidInput, ModelNotReady
from ..http import Body, Header, Reply, Route, json_object, labels_of, read_body
from ..repository import ServedModel
from ..schemas import MAX_DIM

PROTOCOL = "v2"
EXTENSIONS = ["binary_tensor_data", "model_repository", "sagemaker", "metrics"]
_M = "/v2/models/{model}"
_MV = "/v2/models/{model}/versions/{version}"


async def live(request: Request, plane: DataPlane) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request, plane: DataPlane) -> Response:
    ok = plane.ready()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


async def server_metadata(request: Request, plane: DataPlane) -> Response:
    return JSONResponse({"name": "mlxport", "version": __version__, "extensions": EXTENSIONS,
                         "instance": f"{socket.gethostname()}:{os.getpid()}"})  # which process/replica answered


def _model_of(request: Request, plane: DataPlane) -> ServedModel:
    return plane.model(request.path_params["model"], request.path_params.get("version"))


async def model_metadata(request: Request, plane: DataPlane) -> Response:
    model = _model_of(request, plane)
    entry = plane.repo.entries[model.name]
    batch = model.scheduler.config.max_batch_size if model.scheduler.batched else 0
    return JSONResponse({
        "name": model.name, "versions": sorted(entry.loaded, key=int), "platform": model.platform,
        "inputs": [_tensor_meta(s) for s in model.inputs], "outputs": [_tensor_meta(s) for s in model.outputs],
        "parameters": {"version": model.version, "backend": model.backend, "max_batch_size": batch}})


async def model_ready(request: Request, plane: DataPlane) -> Response:
    try:
        model = _model_of(request, plane)
    except ModelNotReady:
        return JSONResponse({"name": request.path_params["model"], "ready": False}, status_code=503)
    return JSONResponse({"name": model.name, "version": model.version, "ready": True})


async def infer(request: Request, plane: DataPlane) -> Response:
    model = _model_of(request, plane)
    labels = labels_of(request)
    labels["model"], labels["version"] = model.name, model.version
    header = request.headers.get("inference-header-content-length")
    if header is not None and not header.isdigit():
        raise InvalidInput(f"Inference-Header-Content-Length must be a number of bytes; got '{header[:40]}'")
    body = await read_body(request, plane.config.max_body_bytes)
    parsed = await plane.offload(len(body), codec.decode_v2, body, int(header) if header else None, model.inputs,
                                 model.outputs)
    model, outputs = await plane.run(labels, model, parsed.feed, pinned="version" in request.path_params)
    data, headers = await plane.offload(sum(o.nbytes for o in outputs), codec.encode_v2, model.name, model.version,
                                        outputs, model.outputs, parsed)
    return Response(data, headers=headers)


async def repository_index(request: Request, plane: DataPlane) -> Response:
    return JSONResponse(plane.repo.index())


async def repository_load(request: Request, plane: DataPlane) -> Response:
    body = await read_body(request, plane.config.max_body_bytes)
    version = None
    if body.strip():
        params = json_object(body).get("parameters")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise InvalidInput('"parameters" must be an object, e.g. {"parameters": {"version": "3"}}')
        version = params.get("version")
        if version is not None and not isinstance(version, (str, int)):
            raise InvalidInput(f'"parameters.version" must be a version number; got {json.dumps(version)[:60]}')
    model = await plane.repo.load(request.path_params["model"], None if version is None else str(version))
    return JSONResponse({"name": model.name, "version": model.version, "state": "READY"})


async def repository_unload(request: Request, plane: DataPlane) -> Response:
    await plane.repo.unload(request.path_params["model"])
    return JSONResponse({"name": request.path_params["model"], "state": "UNAVAILABLE"})


async def repository_rollback(request: Request, plane: DataPlane) -> Response:
    model = await plane.repo.rollback(request.path_params["model"])
    return JSONResponse({"name": model.name, "version": model.version, "state": "READY"})


def _tensor_meta(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": codec.v2_datatype(spec.dtype),
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]}


def _metadata_route(path: str) -> Route:
    return Route("GET", path, model_metadata, "Model metadata: versions, platform, inputs and outputs (-1 for "
                 "dynamic dims).", PROTOCOL, {200: Reply("Metadata.", "V2ModelMetadata")}, (400, 404, 503))


def _ready_route(path: str) -> Route:
    return Route("GET", path, model_ready, "200 when the model (version) is loaded and warmed, else 503.", PROTOCOL,
                 {200: Reply("Ready.", "V2ModelReady"), 503: Reply("Still loading, or failed to load.",
                                                                   "V2ModelReady")}, (400, 404))


def _infer_route(path: str, versioned: bool) -> Route:
    header = Header("Inference-Header-Content-Length", "Binary tensor extension: the JSON header is this many "
                    "bytes; the raw little-endian tensors follow it, in input order, sized by each input's "
                    "parameters.binary_data_size.", {"type": "integer", "minimum": 0, "maximum": MAX_DIM})
    body = Body("V2InferRequest", ("application/octet-stream",), description=(
        "A V2InferRequest; with Inference-Header-Content-Length, that JSON header followed by the binary tensor "
        "data (sent as application/octet-stream or application/json)."))
    reply = Reply("Outputs; binary outputs follow the JSON header when any output asked for them.",
                  "V2InferResponse", ("application/octet-stream",), headers={"Inference-Header-Content-Length": {
                      "description": "Length of the JSON header when binary outputs follow.",
                      "schema": {"type": "integer", "minimum": 0}}})
    return Route("POST", path, infer, "Run the model" + (" version" if versioned else " (its default version)"),
                 PROTOCOL, {200: reply}, (400, 404, 413, 415, 500, 503, 504), request=body, headers=(header,),
                 fast=True)


def _control_route(action: str, handler: Any, summary: str, errors: tuple[int, ...], **kw: Any) -> Route:
    return Route("POST", f"/v2/repository/models/{{model}}/{action}", handler, summary, PROTOCOL,
                 {200: Reply("The model's new state.", "RepositoryModelState")}, errors, tag="repository", **kw)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", live, "Liveness: the server process answers.", PROTOCOL,
          {200: Reply("Live.", "V2Live")}, open=True),
    Route("GET", "/v2/health/ready", ready, "Readiness: 200 only when every model is loaded and warmed.", PROTOCOL,
          {200: Reply("Ready.", "V2Ready"), 503: Reply("Not ready.", "V2Ready")}, open=True),
    Route("GET", "/v2", server_metadata, "Server metadata: name, version, extensions.", PROTOCOL,
          {200: Reply("Metadata.", "V2ServerMetadata")}),
    _metadata_route(_M),
    _metadata_route(_MV),
    _ready_route(_M + "/ready"),
    _ready_route(_MV + "/ready"),
    _infer_route(_M + "/infer", False),
    _infer_route(_MV + "/infer", True),
    Route("POST", "/v2/repository/index", repository_index, "Every model version on disk or loaded, with its state "
          "(Triton-compatible).", PROTOCOL, {200: Reply("Index.", "RepositoryIndex")}, tag="repository",
          description="A request body, if any, is ignored."),
    _control_route("load", repository_load, "Load (or reload) a model; with parameters.version, load that version "
                   "and pin it.", (400, 404, 413, 500, 503, 507),
                   description="The new version is loaded and warmed before it takes traffic (no failed requests).",
                   request=Body("RepositoryLoadRequest", required=False)),
    _control_route("unload", repository_unload, "Unload every version of a model; in-flight requests finish first.",
                   (400, 404), description="A request body, if any, is ignored."),
    _control_route("rollback", repository_rollback, "Make the previous default version the default again (mlxport "
                   "extension).", (400, 404, 500, 503, 507)),
)

"""The HTTP app: SageMaker and Open Inference Protocol v2 endpoints over one data plane.

Endpoints stay thin: read the body (bounded), decode with ``codec``, run through the model's scheduler,
encode. Every error is a typed ``ServeError`` mapped to its status by one handler; nothing else escapes
as a traceback. Auth, metrics and the access log are applied per endpoint by ``_endpoint`` (cheaper than
ASGI middleware on every request).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from . import codec
from .errors import InvalidInput, ModelNotFound, ModelNotReady, Overloaded, PayloadTooLarge, ServeError, Unauthorized
from .repository import Repository, ServedModel

server_log = logging.getLogger("mlxport.serve")

# Bodies above this are decoded and encoded on a worker thread so a large JSON tensor never stalls the loop.
_OFFLOAD_BYTES = 64 << 10


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


class _State:
    def __init__(self) -> None:
        self.in_flight = 0
        self.loading: asyncio.Task | None = None
        self.poller: asyncio.Task | None = None


def create_app(repo: Repository, config: AppConfig, metrics: Any, lm: Any = None) -> Starlette:
    """Build the Starlette app serving ``repo`` and the language models ``lm`` (an ``openai.LMService``).

    Models load in the background once the server starts; language models answer under /v1 (OpenAI API).
    """
    from .openai import LMService, openai_routes

    state = _State()
    lm = lm if lm is not None else LMService(metrics=metrics)

    def error_response(exc: ServeError) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    def _endpoint(protocol: str, *, auth: bool = True) -> Callable:
        def wrap(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def handler(request: Request) -> Response:
                start = time.perf_counter()
                labels = request.scope.setdefault("mlxport", {"model": "", "version": ""})
                try:
                    if auth and config.token:
                        _check_token(request, config.token)
                    response = await fn(request)
                except ServeError as exc:
                    response = error_response(exc)
                except Exception as exc:  # noqa: BLE001 - last line of defence: a 500 with the message, never a crash
                    server_log.exception("unexpected error on %s %s", request.method, request.url.path)
                    response = JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)
                seconds = time.perf_counter() - start
                if labels["model"]:
                    metrics.request(labels["model"], labels["version"], protocol, response.status_code, seconds)
                if config.access_log:
                    _write_access(request, response, labels, seconds)
                return response

            handler.__name__ = fn.__name__
            return handler

        return wrap

    async def run_model(request: Request, model: ServedModel,
                        feed: dict[str, np.ndarray]) -> tuple[ServedModel, list[np.ndarray]]:
        """Run ``feed``; returns the model that ran it (the new default after a swap) and the outputs."""
        if model.scheduler.closing and "version" not in request.path_params:
            # A version swap happened while this request was being read: the new default answers it
            # (no await between this check and submit, so the swap cannot slip in between).
            current = repo.get(model.name)
            if _same_signature(current, model):
                model = current
        labels = request.scope["mlxport"]
        labels["model"], labels["version"] = model.name, model.version
        if state.in_flight >= config.max_concurrency:
            raise Overloaded(f"the server is running {state.in_flight} requests (--max-concurrency "
                             f"{config.max_concurrency}); retry later")
        state.in_flight += 1
        try:
            return model, await model.infer(feed, config.request_timeout_s)
        finally:
            state.in_flight -= 1

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise InvalidInput(f"Content-Length must be a number of bytes; got '{declared[:40]}'")
            if int(declared) > config.max_body_bytes:
                raise PayloadTooLarge(_too_large(int(declared), config.max_body_bytes))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise PayloadTooLarge(_too_large(size, config.max_body_bytes))
            chunks.append(chunk)
        return b"".join(chunks)

    async def off_loop(size: int, fn: Callable, *args: Any) -> Any:
        if size > _OFFLOAD_BYTES:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    # ---- SageMaker ----
    @_endpoint("sagemaker", auth=False)
    async def ping(request: Request) -> Response:
        if repo.ready() and lm.ready():
            return JSONResponse({"status": "healthy"})
        loading = not repo.started or not lm.started
        return JSONResponse({"status": "loading" if loading else "unhealthy",
                             "models": _not_ready(repo) + [r for r in lm.index() if r["state"] != "READY"]},
                            status_code=503)

    async def sagemaker_infer(request: Request, model: ServedModel) -> Response:
        request.scope["mlxport"].update(model=model.name, version=model.version)
        body = await body_of(request)
        feed = await off_loop(len(body), codec.decode_sagemaker, body, request.headers.get("content-type"),
                              model.inputs)
        model, outputs = await run_model(request, model, feed)
        data, ctype = await off_loop(sum(o.nbytes for o in outputs), codec.encode_sagemaker, outputs,
                                     [o.name for o in model.outputs], request.headers.get("accept"))
        return Response(data, media_type=ctype)

    @_endpoint("sagemaker")
    async def invocations(request: Request) -> Response:
        target = request.headers.get("x-amzn-sagemaker-target-model")
        if target:
            name = target.removesuffix(".tar.gz").rsplit("/", 1)[-1]
            return await sagemaker_infer(request, repo.get(name))
        names = [n for n, e in repo.entries.items() if not e.unloaded]
        if len(names) != 1:
            raise InvalidInput(f"{len(names)} models are loaded ({', '.join(sorted(names)) or 'none'}): name one "
                               "with the X-Amzn-SageMaker-Target-Model header or POST /models/{name}/invoke")
        return await sagemaker_infer(request, repo.get(names[0]))

    @_endpoint("sagemaker")
    async def invoke(request: Request) -> Response:
        _not_an_lm(request.path_params["name"])
        return await sagemaker_infer(request, repo.get(request.path_params["name"]))

    @_endpoint("sagemaker")
    async def list_models(request: Request) -> Response:
        return JSONResponse({"models": [_sm_model(e) for e in sorted(repo.entries.values(), key=lambda e: e.name)
                                        if not e.unloaded]})

    @_endpoint("sagemaker")
    async def add_model(request: Request) -> Response:
        payload = _json_object(await body_of(request))
        name, url = payload.get("model_name"), payload.get("url")
        if not isinstance(name, str) or not isinstance(url, str):
            raise InvalidInput('the body must be {"model_name": str, "url": str}; got keys '
                               f"{', '.join(sorted(payload)) or 'none'}")
        model = await repo.add_model(name, url)
        return JSONResponse({"status": f"model '{name}' loaded", "modelName": name, "version": model.version})

    @_endpoint("sagemaker")
    async def describe_model(request: Request) -> Response:
        entry = repo._entry(request.path_params["name"])
        if entry.unloaded:
            repo.get(entry.name)  # raises the "unloaded" 404
        return JSONResponse(_sm_model(entry))

    @_endpoint("sagemaker")
    async def delete_model(request: Request) -> Response:
        name = request.path_params["name"]
        await repo.unload(name, forget=True)
        return JSONResponse({"status": f"model '{name}' unloaded"})

    # ---- Open Inference Protocol v2 ----
    @_endpoint("v2", auth=False)
    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    @_endpoint("v2", auth=False)
    async def ready(request: Request) -> Response:
        ok = repo.ready() and lm.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @_endpoint("v2")
    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "mlxport", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_repository", "sagemaker", "metrics"],
                             "instance": f"{socket.gethostname()}:{os.getpid()}"})  # which process/replica answered

    def _not_an_lm(name: str) -> None:
        if name in lm.models and name not in repo.entries:
            raise ModelNotFound(f"'{name}' is a language model: it is served under /v1 (OpenAI API); POST "
                                f'/v1/completions or /v1/chat/completions with "model": "{name}"')

    def _model_of(request: Request) -> ServedModel:
        _not_an_lm(request.path_params["model"])
        return repo.get(request.path_params["model"], request.path_params.get("version"))

    @_endpoint("v2")
    async def model_metadata(request: Request) -> Response:
        model = _model_of(request)
        entry = repo.entries[model.name]
        return JSONResponse({
            "name": model.name, "versions": sorted(entry.loaded, key=int), "platform": model.platform,
            "inputs": [_tensor_meta(s) for s in model.inputs], "outputs": [_tensor_meta(s) for s in model.outputs],
            "parameters": {"version": model.version, "backend": model.backend,
                           "max_batch_size": model.scheduler.config.max_batch_size if model.scheduler.batched else 0}})

    @_endpoint("v2")
    async def model_ready(request: Request) -> Response:
        try:
            model = _model_of(request)
        except ModelNotReady:
            name = request.path_params["model"]
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        return JSONResponse({"name": model.name, "version": model.version, "ready": True})

    @_endpoint("v2")
    async def infer(request: Request) -> Response:
        model = _model_of(request)
        request.scope["mlxport"].update(model=model.name, version=model.version)
        header = request.headers.get("inference-header-content-length")
        if header is not None and not header.isdigit():
            raise InvalidInput(f"Inference-Header-Content-Length must be a number of bytes; got '{header[:40]}'")
        body = await body_of(request)
        parsed = await off_loop(len(body), codec.decode_v2, body, int(header) if header else None, model.inputs,
                              model.outputs)
        model, outputs = await run_model(request, model, parsed.feed)
        data, headers = await off_loop(sum(o.nbytes for o in outputs), codec.encode_v2, model.name, model.version,
                                       outputs, model.outputs, parsed)
        return Response(data, headers=headers)

    # ---- repository control ----
    @_endpoint("v2")
    async def repository_index(request: Request) -> Response:
        return JSONResponse(repo.index())

    @_endpoint("v2")
    async def repository_load(request: Request) -> Response:
        body = await body_of(request)
        version = None
        if body.strip():
            params = _json_object(body).get("parameters")
            params = {} if params is None else params
            if not isinstance(params, dict):
                raise InvalidInput('"parameters" must be an object, e.g. {"parameters": {"version": "3"}}')
            version = params.get("version")
            if version is not None and not isinstance(version, (str, int)):
                raise InvalidInput(f'"parameters.version" must be a version number; got {json.dumps(version)[:60]}')
        model = await repo.load(request.path_params["model"], None if version is None else str(version))
        return JSONResponse({"name": model.name, "version": model.version, "state": "READY"})

    @_endpoint("v2")
    async def repository_unload(request: Request) -> Response:
        await repo.unload(request.path_params["model"])
        return JSONResponse({"name": request.path_params["model"], "state": "UNAVAILABLE"})

    @_endpoint("v2")
    async def repository_rollback(request: Request) -> Response:
        model = await repo.rollback(request.path_params["model"])
        return JSONResponse({"name": model.name, "version": model.version, "state": "READY"})

    # ---- operations ----
    @_endpoint("metrics", auth=False)
    async def metrics_endpoint(request: Request) -> Response:
        data, ctype = metrics.render(request.headers.get("accept"))
        return Response(data, media_type=ctype)

    spec_cache: list[bytes] = []

    @_endpoint("openapi", auth=False)
    async def openapi(request: Request) -> Response:
        if not spec_cache:
            from .openapi import openapi_spec

            spec_cache.append(json.dumps(openapi_spec(bearer_required=bool(config.token))).encode())
        return Response(spec_cache[0], media_type="application/json")

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return JSONResponse({"error": f"{request.method} is not allowed on {request.url.path}"},
                                status_code=405, headers=exc.headers)
        return JSONResponse({"error": f"no route {request.method} {request.url.path}; see GET /openapi.json"},
                            status_code=exc.status_code)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        async def load_all() -> None:
            results = await asyncio.gather(repo.start(), lm.start(), return_exceptions=True)
            if isinstance(results[0], BaseException):
                # Per-model failures are recorded in the index and /ping stays 503.
                server_log.error("loading the models failed", exc_info=results[0])
                repo.started = True
            ready = repo.ready() and lm.ready()
            server_log.info(json.dumps({"event": "ready" if ready else "not_ready",
                                        "models": repo.index() + lm.index()}))

        async def poll() -> None:
            while True:
                await asyncio.sleep(config.poll_interval_s)
                try:
                    await repo.poll()
                except Exception:  # noqa: BLE001 - polling must survive a bad version folder
                    server_log.exception("polling the repository failed")

        state.loading = asyncio.create_task(load_all())
        if config.poll_interval_s > 0:
            state.poller = asyncio.create_task(poll())
        try:
            yield
        finally:
            if state.poller is not None:
                state.poller.cancel()
            await asyncio.gather(repo.close(config.grace_s), lm.close(config.grace_s))

    p = "/v2/models/{model}"
    pv = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/models", _by_method(GET=list_models, POST=add_model), methods=["GET", "POST"]),
        Route("/models/{name}", _by_method(GET=describe_model, DELETE=delete_model), methods=["GET", "DELETE"]),
        Route("/models/{name}/invoke", invoke, methods=["POST"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route(p, model_metadata, methods=["GET"]),
        Route(pv, model_metadata, methods=["GET"]),
        Route(p + "/ready", model_ready, methods=["GET"]),
        Route(pv + "/ready", model_ready, methods=["GET"]),
        Route(p + "/infer", infer, methods=["POST"]),
        Route(pv + "/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", repository_unload, methods=["POST"]),
        Route("/v2/repository/models/{model}/rollback", repository_rollback, methods=["POST"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *openai_routes(lm, config, metrics),
    ]
    app = _App(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.fast = {"invocations": invocations, "infer": infer}
    return app


class _App(Starlette):
    """Starlette, with the two inference routes dispatched before its router and middleware stack.

    Their handlers (wrapped by ``_endpoint``) turn every exception into a response themselves, so the
    middleware adds nothing there but ~30 µs a request; every other route goes through Starlette.
    """

    fast: dict[str, Callable[[Request], Awaitable[Response]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.fast:
            handler, params = _fast_route(scope["path"], self.fast)
            if handler is not None:
                scope["app"] = self
                scope["path_params"] = params
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _fast_route(path: str, fast: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """``/invocations`` and ``/v2/models/{model}[/versions/{version}]/infer`` -> (handler, path params)."""
    if path == "/invocations":
        return fast["invocations"], {}
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[len("/v2/models/"):-len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return fast["infer"], {"model": parts[0]}
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return fast["infer"], {"model": parts[0], "version": parts[2]}
    return None, {}


def _write_access(request: Request, response: Response, labels: dict[str, str], seconds: float) -> None:
    """One JSON line per request on stderr, built by hand: json.dumps + logging cost ~60 µs a request."""
    scope = request.scope
    client = scope.get("client")
    model = f'"{labels["model"]}"' if labels["model"] else "null"  # names are validated: no quoting needed
    version = f'"{labels["version"]}"' if labels["version"] else "null"
    body = getattr(response, "body", None)
    _stderr_write(
        f'{{"ts":{time.time():.3f},"method":"{scope["method"]}","path":{json.dumps(scope["path"])},'
        f'"status":{response.status_code},"ms":{seconds * 1000:.3f},"model":{model},"version":{version},'
        f'"bytes_out":{len(body) if body is not None else "null"},'
        f'"client":{json.dumps(client[0]) if client else "null"}}}\n')


def _stderr_write(line: str) -> None:
    try:
        sys.stderr.write(line)
    except (OSError, ValueError):  # a closed or broken stderr must not fail the request
        pass


def _by_method(**handlers: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """One route per path (so a 405's Allow header lists every method), dispatching on the method."""
    async def dispatch(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return dispatch


def _same_signature(a: ServedModel, b: ServedModel) -> bool:
    return [vars(s) for s in a.inputs] == [vars(s) for s in b.inputs]


def _check_token(request: Request, token: str) -> None:
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized()


def _too_large(size: int, limit: int) -> str:
    return (f"the body is {size} bytes, over the limit of {limit} bytes; send fewer samples per request, use "
            "binary tensors (application/x-npy or the v2 binary extension), or raise --max-body-size")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"the body must be a JSON object; got {type(payload).__name__}")
    return payload


def _tensor_meta(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": codec.v2_datatype(spec.dtype),
            "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]}


def _sm_model(entry: Any) -> dict[str, Any]:
    url = str(entry.root if entry.root is not None else entry.artifact)
    return {"modelName": entry.name, "modelUrl": url, "version": entry.default,
            "state": "READY" if entry.default is not None else "LOADING"}


def _not_ready(repo: Repository) -> list[dict[str, str]]:
    return [{"name": r["name"], "version": r["version"], "state": r["state"], "reason": r["reason"]}
            for r in repo.index() if r["state"] != "READY"]

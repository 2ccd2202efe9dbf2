"""OpenAI-compatible text generation for exported language models (folders written by ``mlxport export-lm``).

Routes: ``GET /v1/models``, ``GET /v1/models/{model}``, ``POST /v1/completions``, ``POST /v1/chat/completions``.
Bodies, responses and errors follow OpenAI's shapes, so the ``openai`` client works unchanged; with
``"stream": true`` the answer is server-sent events, ``data: {chunk}`` ... ``data: [DONE]``.

A model generates one request at a time (an ``LMRunner`` holds one KV cache) on a thread of its own; other
requests wait in a bounded FIFO queue (full: 503 + Retry-After) and every request has a deadline (504). Tokens
go from that thread to the event loop through an ``asyncio.Queue``; a client that disconnects mid-stream stops
its generation at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .app import _check_token, _json_object, _too_large
from .errors import (Conflict, InferenceTimeout, InvalidInput, ModelFailure, ModelLoadError, ModelNotFound,
                     ModelNotReady, Overloaded, PayloadTooLarge, ServeError, Unauthorized)
from .openai_requests import ParsedRequest, bad_request, fit_max_tokens, model_name, parse_chat, parse_completion
from .repository import NAME_RE, _safe_name

LM_VERSION = "1"  # language models have no numbered versions; metrics and logs use "1"
PROTOCOL = "openai"
OWNER = "mlxport"
WARM_PROMPT = "Hello"

access_log = logging.getLogger("mlxport.access")
server_log = logging.getLogger("mlxport.serve")

_END = object()  # the worker thread's last item for a generation


def is_lm_folder(path: str | os.PathLike) -> bool:
    """True for a folder written by ``mlxport export-lm`` (genai_config.json next to model.onnx)."""
    p = Path(path)
    return p.is_dir() and (p / "genai_config.json").is_file() and (p / "model.onnx").is_file()


@dataclass(eq=False)
class LMModel:
    """One served language model: its folder, its runner once loaded, and its request queue."""

    name: str
    folder: Path
    runner: Any = None
    state: str = "LOADING"  # LOADING, READY or UNAVAILABLE (reason says why)
    reason: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    waiting: int = 0
    turn: asyncio.Lock | None = None  # held while one of its generations runs
    executor: ThreadPoolExecutor | None = None

    @property
    def context_length(self) -> int:
        return int(self.runner.context_length)

    @property
    def vocab_size(self) -> int | None:
        size = self.runner.config.get("model", {}).get("vocab_size")
        return int(size) if size else None


class LMService:
    """The language models of a server, each with one generation thread and a bounded queue.

    Args:
        backend: ``LMRunner`` backend: "auto" (ONNX Runtime GenAI when installed), "genai" or "onnxruntime".
        threads: intra-op threads of the plain ONNX Runtime loop.
        max_queue: requests that may wait per model while one generates; more get 503 + Retry-After.
        metrics: the server's ``Metrics`` (or None).
        log: called with (event, fields) for structured log lines.
    """

    def __init__(self, *, backend: str = "auto", threads: int | None = None, max_queue: int = 64,
                 metrics: Any = None, log: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.backend, self.threads, self.max_queue, self.metrics = backend, threads, max(1, max_queue), metrics
        self.log = log or (lambda event, fields: None)
        self.models: dict[str, LMModel] = {}
        self.started = False
        self.active: set[_Generation] = set()
        self._tokens = _token_counter(metrics)

    def add(self, folder: str | os.PathLike, name: str | None = None) -> str:
        """Register an exported LM folder (loaded by ``start``); returns its model name (the folder's name)."""
        path = Path(folder)
        if not is_lm_folder(path):
            raise ModelLoadError(f"{path} is not an exported LM folder: it needs genai_config.json and model.onnx; "
                                 "make one with `mlxport export-lm MLX_MODEL_FOLDER -o OUT`")
        name = name or _safe_name(path.resolve().name)
        if not NAME_RE.match(name):
            raise InvalidInput(f"model name must match {NAME_RE.pattern}; got '{name[:140]}'")
        if name in self.models:
            raise Conflict(f"two language models are named '{name}' ({path}); rename one folder")
        self.models[name] = LMModel(name, path)
        return name

    def ready(self) -> bool:
        """True when every language model is loaded and warmed."""
        return (self.started or not self.models) and all(m.state == "READY" for m in self.models.values())

    def index(self) -> list[dict[str, str]]:
        """Each model's state, in the repository index's row format."""
        return [{"name": m.name, "version": LM_VERSION, "state": m.state, "reason": m.reason}
                for m in sorted(self.models.values(), key=lambda m: m.name)]

    def get(self, name: str) -> LMModel:
        """The loaded model called ``name`` (404 when unknown, 503 while loading or after a failed load)."""
        model = self.models.get(name)
        if model is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"unknown model '{name[:140]}'; language models served here: {served} "
                                "(GET /v1/models lists them)")
        if model.state == "LOADING":
            raise ModelNotReady(f"model '{name}' is still loading; retry shortly", headers={"Retry-After": "1"})
        if model.state != "READY":
            raise ModelNotReady(f"model '{name}' could not be loaded: {model.reason}", headers={"Retry-After": "5"})
        return model

    async def start(self) -> None:
        """Load and warm every model, each on its own thread (failures are recorded, never raised)."""
        await asyncio.gather(*(self._load(m) for m in self.models.values()))
        self.started = True

    async def _load(self, model: LMModel) -> None:
        model.turn = asyncio.Lock()
        model.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mlxport-lm-{model.name}")
        start = time.perf_counter()
        try:
            model.runner = await asyncio.get_running_loop().run_in_executor(model.executor, self._load_blocking,
                                                                            model.folder)
        except Exception as exc:  # noqa: BLE001 - a broken folder must not take the server down
            model.state, model.reason = "UNAVAILABLE", f"{type(exc).__name__}: {exc}"
            self.log("load_failed", {"model": model.name, "error": model.reason})
            return
        seconds = time.perf_counter() - start
        model.state = "READY"
        if self.metrics is not None:
            self.metrics.model_loaded(model.name, LM_VERSION, seconds)
        self.log("loaded", {"model": model.name, "kind": "lm", "backend": model.runner.backend,
                            "context_length": model.context_length, "seconds": round(seconds, 3)})

    def _load_blocking(self, folder: Path) -> Any:
        from ..lm.generate import GenerationConfig, LMRunner

        runner = LMRunner(folder, backend=self.backend, threads=self.threads)
        # One 1-token generation, so the first request pays no session or tokenizer initialisation.
        runner.generate(runner.encode(WARM_PROMPT) or [0], GenerationConfig(max_tokens=1))
        with contextlib.suppress(Exception):  # the template may refuse a lone user message; requests will tell
            _chat_ids(runner, [{"role": "user", "content": WARM_PROMPT}])  # imports and compiles jinja2
        return runner

    async def close(self, grace_s: float = 30.0) -> None:
        """Let running generations finish (up to ``grace_s``), stop the rest, release the threads."""
        deadline = time.monotonic() + grace_s
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for generation in list(self.active):
            generation.stop()
        for model in self.models.values():
            if model.executor is not None:
                model.executor.shutdown(wait=False, cancel_futures=True)

    def count_tokens(self, model: LMModel, prompt: int, completion: int) -> None:
        """Add to the token counters (mlxport_lm_tokens_total{model, kind})."""
        if self._tokens is not None:
            self._tokens.labels(model.name, "prompt").inc(prompt)
            self._tokens.labels(model.name, "completion").inc(completion)

    def _depth(self, model: LMModel) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth(model.name, LM_VERSION, model.waiting)

    def _observe(self, model: LMModel, kind: str, seconds: float) -> None:
        if self.metrics is None:
            return
        if kind == "queue":
            self.metrics.queue(model.name, LM_VERSION, seconds)
        else:
            self.metrics.compute(model.name, LM_VERSION, seconds, 1)


class _Generation:
    """One request's generation: waits its turn, runs on the model's thread, hands chunks to the event loop."""

    def __init__(self, service: LMService, model: LMModel, ids: list[int], config: Any, timeout_s: float) -> None:
        self.service, self.model, self.ids, self.config, self.timeout_s = service, model, ids, config, timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.cancel = threading.Event()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.tokens = 0
        self.finish_reason = "length"
        self.outcome = "disconnected"  # set to "completed" or "error: ..." by whoever reads it to the end

    def stop(self) -> None:
        """Ask the worker thread to stop after the current token."""
        self.cancel.set()

    async def start(self) -> None:
        """Wait for the model (bounded queue, deadline), then start generating on its thread."""
        model, service = self.model, self.service
        assert model.turn is not None and model.executor is not None  # set by LMService._load
        if model.turn.locked() and model.waiting >= service.max_queue:
            raise Overloaded(f"model '{model.name}' is generating and {model.waiting} requests are waiting (limit "
                             f"{service.max_queue}); retry later or raise --max-queue", retry_after=1.0)
        model.waiting += 1
        service._depth(model)
        queued = time.perf_counter()
        try:
            await asyncio.wait_for(model.turn.acquire(), max(self.deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise InferenceTimeout(f"model '{model.name}' could not start this request within {self.timeout_s:g} s "
                                   f"({model.waiting - 1} other requests waiting); raise --request-timeout or ask "
                                   "for fewer tokens per request") from None
        finally:
            model.waiting -= 1
            service._depth(model)
        service._observe(model, "queue", time.perf_counter() - queued)
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(model.executor, self._run, loop)
        except RuntimeError:  # the executor was shut down: the server is stopping
            model.turn.release()
            raise ModelNotReady(f"model '{model.name}' is shutting down", headers={"Retry-After": "5"}) from None
        service.active.add(self)

        def done(_future: Any) -> None:
            model.turn.release()
            service.active.discard(self)

        future.add_done_callback(done)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the model's thread: generate, handing each chunk (then any error, then _END) to the loop."""
        start = time.perf_counter()
        stream = self.model.runner.stream(self.ids, self.config)
        try:
            for chunk in stream:
                self._emit(loop, chunk)
                if self.cancel.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - handed to the request, which answers with the error
            self._emit(loop, exc)
        finally:
            stream.close()  # releases LMRunner.lock even when stopped early
            self.service._observe(self.model, "compute", time.perf_counter() - start)
            self._emit(loop, _END)

    def _emit(self, loop: asyncio.AbstractEventLoop, item: Any) -> None:
        try:
            loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody will read this
            self.cancel.set()

    async def next(self) -> Any:
        """The next chunk (``lm.generate.Chunk``), or None once the generation has ended."""
        try:
            item = await asyncio.wait_for(self.queue.get(), max(self.deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            self.stop()
            raise InferenceTimeout(f"model '{self.model.name}' did not finish within {self.timeout_s:g} s "
                                   f"({self.tokens} tokens generated); raise --request-timeout or ask for fewer "
                                   "tokens") from None
        if item is _END:
            return None
        if isinstance(item, BaseException):
            if isinstance(item, ValueError):
                raise bad_request(str(item))
            raise ModelFailure(f"model '{self.model.name}' failed while generating: {type(item).__name__}: {item}")
        if item.token is not None:
            self.tokens += 1
        if item.finish_reason:
            self.finish_reason = item.finish_reason
        return item


class _EventStream(StreamingResponse):
    """Server-sent events; the generation stops however the response ends (done, error, client gone)."""

    def __init__(self, body: AsyncIterator[bytes], generation: _Generation) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.generation = generation
        self.on_close: Callable[[str], None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            pass  # the client went away; outcome stays "disconnected"
        finally:
            self.generation.stop()
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            if self.on_close is not None:
                self.on_close(self.generation.outcome)


@dataclass
class _Shape:
    """OpenAI's response objects for one request."""

    id: str
    created: int
    model: str
    chat: bool
    include_usage: bool = False

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def full(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish_reason}
            return {**self._head("chat.completion"), "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**self._head("text_completion"), "choices": [choice], "usage": usage}

    def chunk(self, text: str, finish_reason: str | None, *, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            out = {**self._head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            out = {**self._head("text_completion"), "choices": [choice]}
        if self.include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": usage}


def openai_routes(service: LMService, config: Any, metrics: Any) -> list[Route]:
    """The /v1 routes over ``service``, with the app's token, body limit, timeout, metrics and access log.

    Args:
        service: the server's language models.
        config: the app's ``AppConfig`` (token, max_body_bytes, request_timeout_s, access_log).
        metrics: the server's ``Metrics`` (or None).

    Returns:
        Starlette routes to add to the app's route table.
    """
    Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]

    def finish(request: Request, info: dict[str, Any], code: int, start: float, size: int | None) -> None:
        seconds = time.perf_counter() - start
        if info.get("model") and metrics is not None:
            metrics.request(info["model"], LM_VERSION, PROTOCOL, code, seconds)
        if config.access_log:
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "method": request.method, "path": request.url.path, "status": code,
                "ms": round(seconds * 1000, 3), "model": info.get("model") or None,
                "version": LM_VERSION if info.get("model") else None, "bytes_out": size,
                "client": request.client.host if request.client else None,
                **{k: v for k, v in info.items() if k != "model"}}, separators=(",", ":")))

    def endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            start = time.perf_counter()
            info: dict[str, Any] = {"model": ""}
            try:
                if config.token:
                    _check_token(request, config.token)
                response = await fn(request, info)
            except ServeError as exc:
                response = error_response(exc)
            except Exception as exc:  # noqa: BLE001 - last line of defence: a 500 with the message, never a crash
                server_log.exception("unexpected error on %s %s", request.method, request.url.path)
                response = error_response(ServeError(f"internal error: {type(exc).__name__}: {exc}"))
            if isinstance(response, _EventStream):
                def closed(outcome: str) -> None:
                    info["outcome"] = outcome
                    finish(request, info, response.status_code, start, None)

                response.on_close = closed
            else:
                finish(request, info, response.status_code, start, len(response.body))
            return response

        handler.__name__ = fn.__name__
        return handler

    async def read_json(request: Request) -> dict[str, Any]:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(_too_large(int(declared), limit))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(_too_large(size, limit))
            chunks.append(chunk)
        return _json_object(b"".join(chunks))

    async def list_models(request: Request, info: dict[str, Any]) -> Response:
        return JSONResponse({"object": "list", "data": [_model_card(m) for m in service.models.values()]})

    async def get_model(request: Request, info: dict[str, Any]) -> Response:
        name = request.path_params["model"]
        if name not in service.models:
            service.get(name)  # raises the 404 naming the served models
        return JSONResponse(_model_card(service.models[name]))

    async def completions(request: Request, info: dict[str, Any]) -> Response:
        payload = await read_json(request)
        model = service.get(model_name(payload))
        info["model"] = model.name
        parsed = parse_completion(payload, model.vocab_size)
        prompt = parsed.prompt
        ids = await asyncio.to_thread(model.runner.encode, prompt) if isinstance(prompt, str) else list(prompt or [])
        return await generate(model, parsed, ids, info, chat=False)

    async def chat_completions(request: Request, info: dict[str, Any]) -> Response:
        payload = await read_json(request)
        model = service.get(model_name(payload))
        info["model"] = model.name
        parsed = parse_chat(payload)
        ids = await asyncio.to_thread(_chat_ids, model.runner, parsed.messages)
        return await generate(model, parsed, ids, info, chat=True)

    async def generate(model: LMModel, parsed: ParsedRequest, ids: list[int], info: dict[str, Any], *,
                       chat: bool) -> Response:
        if not ids:
            raise bad_request("the prompt is empty after tokenization: give some text",
                              "messages" if chat else "prompt")
        parsed.config.max_tokens = fit_max_tokens(parsed, len(ids), model.context_length, chat=chat)
        if model.vocab_size and parsed.config.top_k >= model.vocab_size:
            parsed.config.top_k = 0  # keeping every token is no top-k at all (and GenAI refuses k > vocab)
        try:
            parsed.config.check()
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        info.update(prompt_tokens=len(ids), stream=parsed.stream)
        generation = _Generation(service, model, ids, parsed.config, config.request_timeout_s)
        await generation.start()
        shape = _Shape(("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24], int(time.time()), model.name,
                       chat, parsed.include_usage)
        if parsed.stream:
            try:
                first = await generation.next()  # errors before the first token still get their status code
            except BaseException:
                generation.stop()
                raise
            return _EventStream(_events(service, generation, first, shape, info), generation)
        parts: list[str] = []
        try:
            while (chunk := await generation.next()) is not None:
                parts.append(chunk.text)
        finally:
            generation.stop()
        generation.outcome = "completed"
        service.count_tokens(model, len(ids), generation.tokens)
        info["completion_tokens"] = generation.tokens
        return JSONResponse(shape.full("".join(parts), generation.finish_reason, _usage(len(ids), generation.tokens)))

    return [
        Route("/v1/models", endpoint(list_models), methods=["GET"]),
        Route("/v1/models/{model}", endpoint(get_model), methods=["GET"]),
        Route("/v1/completions", endpoint(completions), methods=["POST"]),
        Route("/v1/chat/completions", endpoint(chat_completions), methods=["POST"]),
    ]


async def _events(service: LMService, generation: _Generation, first: Any, shape: _Shape,
                  info: dict[str, Any]) -> AsyncIterator[bytes]:
    """The SSE body: a role chunk (chat), one chunk per piece of text, the finish chunk, usage, ``[DONE]``."""
    prompt_tokens = len(generation.ids)
    try:
        if shape.chat:
            yield _event(shape.chunk("", None, role=True))
        chunk = first
        while chunk is not None:
            if chunk.text:
                yield _event(shape.chunk(chunk.text, None))
            chunk = await generation.next()
        yield _event(shape.chunk("", generation.finish_reason))
        if shape.include_usage:
            yield _event(shape.usage_chunk(_usage(prompt_tokens, generation.tokens)))
        generation.outcome = "completed"
    except ServeError as exc:
        # The status line (200) is already sent: the error goes in the stream, as OpenAI's API does.
        generation.outcome = f"error: {exc}"[:300]
        yield _event(error_body(exc))
    finally:
        generation.stop()
        service.count_tokens(generation.model, prompt_tokens, generation.tokens)
        info["completion_tokens"] = generation.tokens
    yield b"data: [DONE]\n\n"


def error_body(exc: ServeError) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    code = getattr(exc, "code", None)
    if code is None:
        code = next((c for cls, c in _ERROR_CODES if isinstance(exc, cls)), None)
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    return {"error": {"message": str(exc), "type": kind, "param": getattr(exc, "param", None), "code": code}}


def error_response(exc: ServeError) -> Response:
    """The JSON error response of ``exc`` (its status and headers, e.g. Retry-After)."""
    return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers)


_ERROR_CODES: tuple[tuple[type, str], ...] = (
    (Unauthorized, "invalid_api_key"), (ModelNotFound, "model_not_found"), (PayloadTooLarge, "request_too_large"),
    (Overloaded, "overloaded"), (ModelNotReady, "model_not_ready"), (InferenceTimeout, "timeout"),
    (ModelFailure, "model_error"), (InvalidInput, "invalid_value"),
)


def _chat_ids(runner: Any, messages: list[dict[str, str]]) -> list[int]:
    """Render the chat template and tokenize (on a worker thread)."""
    import jinja2

    try:
        prompt = runner.apply_chat_template(messages)
    except (ValueError, jinja2.TemplateError) as exc:
        raise bad_request(f"the model's chat template cannot render these messages: {exc}", "messages") from None
    return runner.encode(prompt)


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _model_card(model: LMModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": model.created, "owned_by": OWNER}


def _token_counter(metrics: Any) -> Any:
    registry = getattr(metrics, "registry", None)
    if registry is None:
        return None
    from prometheus_client import Counter

    return Counter("mlxport_lm_tokens", "Tokens read (kind=prompt) and generated (kind=completion) by language "
                   "models.", ("model", "kind"), registry=registry)

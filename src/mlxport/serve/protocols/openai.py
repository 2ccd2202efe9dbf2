"""OpenAI-compatible text generation over the language models of ``lmservice.py``, as route declarations.

Routes: ``GET /v1/models``, ``GET /v1/models/{model}``, ``POST /v1/completions``, ``POST /v1/chat/completions``.
Bodies, responses and errors follow OpenAI's shapes, so the ``openai`` client works unchanged; with
``"stream": true`` the answer is server-sent events, ``data: {chunk}`` ... ``data: [DONE]``. The access-log line
of a stream is written when it ends, with its outcome ("completed", "disconnected" or the error).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..dataplane import DataPlane
from ..errors import (InferenceTimeout, InvalidInput, ModelFailure, ModelNotFound, ModelNotReady, Overloaded,
                      PayloadTooLarge, ServeError, Unauthorized)
from ..http import Body, Reply, Route, StreamResponse, json_object, labels_of, read_body
from ..lmservice import LM_VERSION, Generation, LMModel, LMService, chat_ids
from ..openai_requests import ParsedRequest, bad_request, fit_max_tokens, model_name, parse_chat, parse_completion

PROTOCOL = "openai"
OWNER = "mlxport"


class _EventStream(StreamResponse):
    """Server-sent events; the generation stops however the response ends (done, error, client gone)."""

    def __init__(self, body: AsyncIterator[bytes], generation: Generation) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.generation = generation

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


async def list_models(request: Request, plane: DataPlane) -> Response:
    return JSONResponse({"object": "list", "data": [_model_card(m) for m in plane.lm.models.values()]})


async def get_model(request: Request, plane: DataPlane) -> Response:
    name = request.path_params["model"]
    if name not in plane.lm.models:
        plane.lm.get(name)  # raises the 404 naming the served models
    return JSONResponse(_model_card(plane.lm.models[name]))


async def _model(request: Request, plane: DataPlane) -> tuple[dict[str, Any], LMModel, dict[str, Any]]:
    """The JSON body, the model it names (loaded), and the request's labels (model and version set)."""
    payload = json_object(await read_body(request, plane.config.max_body_bytes))
    model = plane.lm.get(model_name(payload))
    labels = labels_of(request)
    labels["model"], labels["version"] = model.name, LM_VERSION
    return payload, model, labels


async def completions(request: Request, plane: DataPlane) -> Response:
    payload, model, labels = await _model(request, plane)
    parsed = parse_completion(payload, model.vocab_size)
    prompt = parsed.prompt
    ids = await asyncio.to_thread(model.runner.encode, prompt) if isinstance(prompt, str) else list(prompt or [])
    return await _generate(plane, model, parsed, ids, labels, chat=False)


async def chat_completions(request: Request, plane: DataPlane) -> Response:
    payload, model, labels = await _model(request, plane)
    parsed = parse_chat(payload)
    ids = await asyncio.to_thread(chat_ids, model.runner, parsed.messages)
    return await _generate(plane, model, parsed, ids, labels, chat=True)


async def _generate(plane: DataPlane, model: LMModel, parsed: ParsedRequest, ids: list[int], info: dict[str, Any],
                    *, chat: bool) -> Response:
    service = plane.lm
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
    generation = Generation(service, model, ids, parsed.config, plane.config.request_timeout_s)
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


async def _events(service: LMService, generation: Generation, first: Any, shape: _Shape,
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


_ERROR_CODES: tuple[tuple[type, str], ...] = (
    (Unauthorized, "invalid_api_key"), (ModelNotFound, "model_not_found"), (PayloadTooLarge, "request_too_large"),
    (Overloaded, "overloaded"), (ModelNotReady, "model_not_ready"), (InferenceTimeout, "timeout"),
    (ModelFailure, "model_error"), (InvalidInput, "invalid_value"),
)


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _model_card(model: LMModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": model.created, "owned_by": OWNER}


def _generate_route(path: str, handler: Any, summary: str, request: str, response: str) -> Route:
    return Route(
        "POST", path, handler, summary, PROTOCOL, {200: Reply("The generated text and token usage.", response,
                                                             text=("text/event-stream",))},
        (400, 404, 413, 500, 503, 504), request=Body(request), error_body=error_body,
        error_schema="OpenAIError",
        description="One generation at a time per model; others wait in a bounded queue (full: 503 + Retry-After). "
                    "With stream true the answer is server-sent events: 'data: {chunk}' lines, then 'data: [DONE]'; "
                    "an error after the first event arrives as a data line holding an OpenAIError.")


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/models", list_models, "The language models served (OpenAI API).", PROTOCOL,
          {200: Reply("Models.", "OpenAIModelList")}, error_body=error_body, error_schema="OpenAIError"),
    Route("GET", "/v1/models/{model}", get_model, "One language model (OpenAI API).", PROTOCOL,
          {200: Reply("The model.", "OpenAIModel")}, (404,), error_body=error_body, error_schema="OpenAIError"),
    _generate_route("/v1/completions", completions, "Complete a prompt (OpenAI completions).", "CompletionRequest",
                    "CompletionResponse"),
    _generate_route("/v1/chat/completions", chat_completions, "Answer chat messages (OpenAI chat completions).",
                    "ChatCompletionRequest", "ChatCompletionResponse"),
)

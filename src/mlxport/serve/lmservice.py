"""Language models of the server (folders written by ``mlxport export-lm``): loading, queueing, generating.

A model generates one request at a time (an ``LMRunner`` holds one KV cache) on a thread of its own; other
requests wait in a bounded FIFO queue (full: 503 + Retry-After) and every request has a deadline (504). Tokens
go from that thread to the event loop through an ``asyncio.Queue``; a consumer that stops reading (a client that
disconnects mid-stream) stops its generation at the next token. The OpenAI routes over it are
``protocols/openai.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import (Conflict, InferenceTimeout, InvalidInput, ModelFailure, ModelLoadError, ModelNotFound,
                     ModelNotReady, Overloaded)
from .openai_requests import bad_request
from .repository import NAME_RE, safe_name

LM_VERSION = "1"  # language models have no numbered versions; metrics and logs use "1"
WARM_PROMPT = "Hello"

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
        threads: intra-op threads of each LM (either backend); None keeps the folder's or the runtime's.
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
        self.active: set[Generation] = set()
        self._tokens = _token_counter(metrics)

    def add(self, folder: str | os.PathLike, name: str | None = None) -> str:
        """Register an exported LM folder (loaded by ``start``); returns its model name (the folder's name)."""
        path = Path(folder)
        if not is_lm_folder(path):
            raise ModelLoadError(f"{path} is not an exported LM folder: it needs genai_config.json and model.onnx; "
                                 "make one with `mlxport export-lm MLX_MODEL_FOLDER -o OUT`")
        name = name or safe_name(path.resolve().name)
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
            chat_ids(runner, [{"role": "user", "content": WARM_PROMPT}])  # imports and compiles jinja2
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


class Generation:
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


def chat_ids(runner: Any, messages: list[dict[str, str]]) -> list[int]:
    """Render the chat template and tokenize (on a worker thread)."""
    import jinja2

    try:
        prompt = runner.apply_chat_template(messages)
    except (ValueError, jinja2.TemplateError) as exc:
        raise bad_request(f"the model's chat template cannot render these messages: {exc}", "messages") from None
    return runner.encode(prompt)



def _token_counter(metrics: Any) -> Any:
    registry = getattr(metrics, "registry", None)
    if registry is None:
        return None
    from prometheus_client import Counter

    return Counter("mlxport_lm_tokens", "Tokens read (kind=prompt) and generated (kind=completion) by language "
                   "models.", ("model", "kind"), registry=registry)

"""The data plane: which model answers, the server-wide concurrency bound, running on the model's scheduler.

Protocols (``protocols/``) parse a request into named numpy inputs, ask the ``DataPlane`` for the model and run
it through ``DataPlane.run``, and encode the outputs; nothing here knows HTTP beyond the request's labels. It
also owns the server's lifecycle (load everything, poll for new versions, drain on shutdown).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable

import numpy as np

from .errors import InvalidInput, ModelNotFound, Overloaded
from .http import AppConfig
from .repository import Repository, ServedModel

server_log = logging.getLogger("mlxport.serve")

# Bodies above this are decoded and encoded on a worker thread so a large JSON tensor never stalls the loop.
OFFLOAD_BYTES = 64 << 10


class DataPlane:
    """The models of one server (``repo``, and the language models ``lm``) and how requests reach them.

    Args:
        repo: the model repository (None only where an app is built to list its routes).
        lm: the ``lm.LMService`` of the language models.
        config: limits and switches.
        metrics: the server's ``Metrics`` (scraped by /metrics).
    """

    def __init__(self, repo: Repository, lm: Any, config: AppConfig, metrics: Any) -> None:
        self.repo, self.lm, self.config, self.metrics = repo, lm, config, metrics
        self.in_flight = 0
        self.openapi: Callable[[], bytes] = lambda: b"{}"  # the served document; set by the app
        self._tasks: list[asyncio.Task] = []

    # ---- which model ----
    def ready(self) -> bool:
        """True when every model and language model is loaded and warmed."""
        return self.repo.ready() and self.lm.ready()

    def loading(self) -> bool:
        """True until both services finished their first load."""
        return not self.repo.started or not self.lm.started

    def not_ready(self) -> list[dict[str, str]]:
        """The model versions that are not READY, with their reason (repository index rows)."""
        rows = [{"name": r["name"], "version": r["version"], "state": r["state"], "reason": r["reason"]}
                for r in self.repo.index() if r["state"] != "READY"]
        return rows + [r for r in self.lm.index() if r["state"] != "READY"]

    def not_an_lm(self, name: str) -> None:
        """Raise a 404 that points to /v1 when ``name`` is a language model."""
        if name in self.lm.models and name not in self.repo.entries:
            raise ModelNotFound(f"'{name}' is a language model: it is served under /v1 (OpenAI API); POST "
                                f'/v1/completions or /v1/chat/completions with "model": "{name}"')

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The loaded model version to run (the default version when ``version`` is None)."""
        self.not_an_lm(name)
        return self.repo.get(name, version)

    def sole_model(self) -> ServedModel:
        """The one loaded model (SageMaker's single-model /invocations); 400 when there are several or none."""
        names = [n for n, e in self.repo.entries.items() if not e.unloaded]
        if len(names) != 1:
            raise InvalidInput(f"{len(names)} models are loaded ({', '.join(sorted(names)) or 'none'}): name one "
                               "with the X-Amzn-SageMaker-Target-Model header or POST /models/{name}/invoke")
        return self.repo.get(names[0])

    # ---- running ----
    async def run(self, labels: dict[str, Any], model: ServedModel, feed: dict[str, np.ndarray], *,
                  pinned: bool = False) -> tuple[ServedModel, list[np.ndarray]]:
        """Run ``feed`` on ``model``'s scheduler; returns the model that ran it and the outputs.

        Args:
            labels: the request's labels (model and version are set to the model that runs).
            model: the model version the request was decoded for.
            feed: named inputs, checked against the model's signature.
            pinned: the request named the version; otherwise a version swapped in meanwhile answers.

        Raises:
            Overloaded: ``max_concurrency`` requests are running.
        """
        if model.scheduler.closing and not pinned:
            # A version swap happened while this request was being read: the new default answers it
            # (no await between this check and submit, so the swap cannot slip in between).
            current = self.repo.get(model.name)
            if _same_signature(current, model):
                model = current
        labels["model"], labels["version"] = model.name, model.version
        if self.in_flight >= self.config.max_concurrency:
            raise Overloaded(f"the server is running {self.in_flight} requests (--max-concurrency "
                             f"{self.config.max_concurrency}); retry later")
        self.in_flight += 1
        try:
            return model, await model.infer(feed, self.config.request_timeout_s)
        finally:
            self.in_flight -= 1

    @staticmethod
    async def offload(size: int, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``, on a worker thread when ``size`` bytes is enough to stall the event loop."""
        if size > OFFLOAD_BYTES:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    # ---- lifecycle ----
    async def start(self) -> None:
        """Start loading every model (in the background) and the repository poller."""
        self._tasks.append(asyncio.create_task(self._load_all()))
        if self.config.poll_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll()))

    async def close(self) -> None:
        """Stop polling, let running requests finish (``grace_s``), stop the models."""
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(self.repo.close(self.config.grace_s), self.lm.close(self.config.grace_s))

    async def _load_all(self) -> None:
        results = await asyncio.gather(self.repo.start(), self.lm.start(), return_exceptions=True)
        if isinstance(results[0], BaseException):
            # Per-model failures are recorded in the index and /ping stays 503.
            server_log.error("loading the models failed", exc_info=results[0])
            self.repo.started = True
        server_log.info(json.dumps({"event": "ready" if self.ready() else "not_ready",
                                    "models": self.repo.index() + self.lm.index()}))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await self.repo.poll()
            except Exception:  # noqa: BLE001 - polling must survive a bad version folder
                server_log.exception("polling the repository failed")


def _same_signature(a: ServedModel, b: ServedModel) -> bool:
    return [vars(s) for s in a.inputs] == [vars(s) for s in b.inputs]

"""Start the server: build the repository and app, run uvicorn, drain on SIGTERM and exit 0."""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .app import AppConfig, create_app
from .batching import BatchConfig
from .errors import ServeError
from .repository import Repository, ServeOptions, VersionPolicy

if TYPE_CHECKING:
    from starlette.applications import Starlette

SAGEMAKER_MODEL_DIR = "/opt/ml/model"


def default_sources() -> list[Path]:
    """The model folder of a SageMaker container ($SM_MODEL_DIR or /opt/ml/model) when no path is given."""
    folder = Path(os.environ.get("SM_MODEL_DIR", SAGEMAKER_MODEL_DIR))
    return [folder] if folder.exists() else []


def serve(
    sources: Sequence[str | os.PathLike],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    grace_s: float = 30.0,
    access_log: bool = True,
    **options: Any,
) -> int:
    """Serve models over HTTP until SIGTERM/SIGINT; returns the exit code (0 after a clean drain).

    Args:
        sources: artifacts, folders holding one, versioned model folders or repositories (see repository.py), or
            exported LM folders (``mlxport export-lm``: served under /v1, the OpenAI API).
        host: address to bind (127.0.0.1 unless told otherwise).
        port: TCP port.
        grace_s: on SIGTERM, how long in-flight requests may take to finish.
        access_log: one JSON line per request on stderr.
        **options: the batching, limit, backend and repository options of ``build_app``.

    Returns:
        The process exit code.
    """
    import uvicorn

    configure_logging()
    app = build_app(sources, grace_s=grace_s, access_log=access_log, **options)
    uv_config = uvicorn.Config(
        app, host=host, port=port, lifespan="on", access_log=False, log_level="warning",
        loop=_best("uvloop", "asyncio"), http=_best("httptools", "h11"),
        timeout_graceful_shutdown=grace_s, timeout_keep_alive=75, server_header=False)
    _check_port_free(host, port)
    server = _server_class(uvicorn)(uv_config)
    print(f"mlxport serve: http://{host}:{port}  models: {model_names(app)}", file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        app.state.executor.shutdown(wait=False, cancel_futures=True)
    return 0 if server.started else 1


def build_app(
    sources: Sequence[str | os.PathLike],
    *,
    token: str | None = None,
    backend: str | None = None,
    threads: int | None = None,
    compute_threads: int | None = None,
    instances: int = 1,
    batching: bool = True,
    max_batch_size: int = 64,
    max_queue_delay_ms: float = 0.0,
    max_queue_rows: int = 8192,
    max_concurrency: int = 512,
    request_timeout_s: float = 60.0,
    max_body_bytes: int = 6 * 2**20,
    memory_limit: int | None = None,
    version_policy: str = "latest",
    poll_interval_s: float = 2.0,
    load_roots: Sequence[str | os.PathLike] = (),
    grace_s: float = 30.0,
    access_log: bool = True,
    lm_backend: str = "auto",
) -> Starlette:
    """Build the ASGI app of ``serve`` without running it (models load when its lifespan starts).

    Used by ``serve`` (uvicorn) and by ``serve_ray`` (one app per Ray Serve replica).

    Args:
        sources: artifacts, folders holding one, versioned model folders or repositories (see repository.py), or
            exported LM folders (``mlxport export-lm``: served under /v1, the OpenAI API).
        token: when set, every endpoint but health, ping and metrics needs ``Authorization: Bearer <token>``.
        backend: which artifact to prefer when a version folder holds several (default: ONNX Runtime first).
        threads: ONNX Runtime intra-op threads per model.
        compute_threads: worker threads that run models (default: min(4, CPUs)).
        instances: concurrent batches per model (ONNX Runtime and torch; LiteRT and MLX always 1).
        batching: merge concurrent requests of models with a dynamic batch axis.
        max_batch_size: rows per merged batch.
        max_queue_delay_ms: how long the first request of a batch waits for others.
        max_queue_rows: rows queued per model before requests get 503 + Retry-After.
        max_concurrency: inference requests in flight before 503 + Retry-After.
        request_timeout_s: a request not answered in this time gets 504.
        max_body_bytes: larger bodies get 413.
        memory_limit: bytes; models that would not fit are refused (and MLX's limit is set).
        version_policy: "latest", "latest:N", "all" or "specific:1,3".
        poll_interval_s: how often to look for new versions on disk (0: never).
        load_roots: folders the multi-model ``POST /models`` may load from (the sources are always allowed).
        grace_s: on SIGTERM, how long in-flight requests may take to finish.
        access_log: one JSON line per request on stderr.
        lm_backend: how exported LM folders generate: "auto" (ONNX Runtime GenAI when installed), "genai" or
            "onnxruntime" (mlxport's decode loop).

    Returns:
        The Starlette app; ``app.state`` holds ``repo`` (the Repository), ``lm`` (the LMService) and
        ``executor`` (the compute thread pool, for the caller to shut down).

    Raises:
        ArtifactError: a source is not an artifact, model folder, repository or LM folder, or names clash.
    """
    from ..errors import ArtifactError
    from .metrics import Metrics
    from .lmservice import LMService, is_lm_folder

    options = ServeOptions(
        backend=backend, threads=threads, batching=batching, memory_limit=memory_limit,
        policy=VersionPolicy.parse(version_policy),
        batch=BatchConfig(max_batch_size=max_batch_size, max_queue_delay_ms=max_queue_delay_ms,
                          max_queue_rows=max_queue_rows, instances=instances, timeout_s=request_timeout_s),
        load_roots=tuple(Path(p).resolve() for p in [*load_roots, *sources]))
    executor = ThreadPoolExecutor(max_workers=compute_threads or min(4, os.cpu_count() or 1),
                                  thread_name_prefix="mlxport-compute")
    metrics = Metrics()
    repo = Repository(options, executor, metrics, log=_log_event)
    lm = LMService(backend=lm_backend, threads=threads, max_queue=min(max_queue_rows, 256), metrics=metrics, log=_log_event)
    try:
        for source in sources:
            try:
                if is_lm_folder(source):
                    lm.add(Path(source))
                else:
                    repo.add_source(Path(source), skip=lambda model_dir: _add_lm_versions(lm, model_dir))
            except ServeError as exc:
                raise ArtifactError(str(exc), hint="Give an artifact, a folder holding one, a repository "
                                                   "<repo>/<model>/<N>/<artifact>, or an exported LM folder.") from None
        clash = sorted(set(lm.models) & set(repo.entries))
        if clash:
            raise ArtifactError(f"a language model and a model of the repository are both named {', '.join(clash)}",
                                hint="Rename one of the folders: names are unique across /v1 and /v2.")
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    config = AppConfig(token=token, max_body_bytes=max_body_bytes, max_concurrency=max_concurrency,
                       request_timeout_s=request_timeout_s, poll_interval_s=poll_interval_s, grace_s=grace_s,
                       access_log=access_log)
    app = create_app(repo, config, metrics, lm)
    app.state.repo, app.state.lm, app.state.executor = repo, lm, executor
    return app


def model_names(app: Starlette) -> str:
    """The models an app from ``build_app`` serves, for the start-up line."""
    return ", ".join(sorted([*app.state.repo.entries, *app.state.lm.models])) or "none (add with POST /models)"


def _server_class(uvicorn: Any) -> type:
    """uvicorn.Server that exits 0 after a signal-triggered graceful shutdown."""

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the captured signal once it has drained, so the process would die of SIGTERM
            # (exit 143) after a clean drain; SageMaker and Kubernetes read 0 as a clean stop.
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return _Server


def _add_lm_versions(lm: Any, model_dir: Path) -> bool:
    """A repository's <model>/<N>/ that holds export-lm folders: its newest version goes to /v1 (True)."""
    from .lmservice import is_lm_folder
    from .repository import VERSION_RE

    versions = sorted((p for p in model_dir.iterdir() if p.is_dir() and VERSION_RE.match(p.name)),
                      key=lambda p: int(p.name))
    if not versions or not is_lm_folder(versions[-1]):
        return False
    lm.add(versions[-1], name=model_dir.name)
    return True


def _check_port_free(host: str, port: int) -> None:
    """Fail with a clear error (exit 1) before uvicorn would exit 3 with a plain log line."""
    import socket

    from ..errors import MlxportError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise MlxportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                               hint="Another process holds the port: stop it or pass --port.") from None


def _best(preferred: str, fallback: str) -> str:
    import importlib.util

    return preferred if importlib.util.find_spec(preferred) is not None else fallback


def configure_logging() -> None:
    """JSON event lines of ``mlxport.serve`` on stderr, and no ONNX Runtime log lines between them.

    The access log does not go through ``logging``: ``http.write_access`` writes its lines itself (cheaper).
    """
    import onnxruntime as ort

    # A model failing on bad input is answered with a 500 naming the error; ONNX Runtime's own
    # coloured log line for it would only break the JSON log stream.
    ort.set_default_logger_severity(4)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("mlxport.serve")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _log_event(event: str, fields: dict) -> None:
    import json

    logging.getLogger("mlxport.serve").info(json.dumps({"event": event, **fields}, default=str))


__all__ = ["serve", "build_app", "default_sources", "ServeError"]

"""``mlxport serve --ray``: the same HTTP data plane as a Ray Serve deployment (replicas, autoscaling).

Each replica builds the app of ``server.build_app`` itself (``serve.ingress`` with a builder function), so
models load on the replica, not in the driver. Ray runs the ASGI lifespan on every replica before the
replica takes traffic; the lifespan here also waits until the models are loaded and warmed, so Ray routes
only to warm replicas (the single server says the same with ``/ping``). The driver process blocks until
SIGTERM/SIGINT, then shuts Serve and Ray down and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

RAY_EXTRA = 'pip install "mlxport[ray]"'
APP_NAME = "mlxport"
# Ray's minimum is 75 MiB; requests above 100 KiB travel through the object store, and it spills to disk when full.
_OBJECT_STORE_BYTES = 256 * 2**20

log = logging.getLogger("mlxport.serve")


class _Stop(BaseException):
    """Raised in the main thread by the first SIGTERM/SIGINT."""


def import_ray_serve() -> tuple[Any, Any]:
    """``(ray, ray.serve)``, or an MlxportError that names the extra to install."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        from ..errors import MlxportError

        raise MlxportError(f"--ray needs Ray Serve, which is not installed: {exc}",
                           hint=f"Install it with: {RAY_EXTRA} (or serve without --ray).") from None
    return ray, serve


def serve_ray(
    sources: Sequence[str | os.PathLike],
    *,
    replicas: int = 2,
    autoscaling: dict[str, Any] | None = None,
    num_cpus: float | None = None,
    replica_cpus: float | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    ray_address: str | None = None,
    **app_options: Any,
) -> int:
    """Serve models as a Ray Serve deployment until SIGTERM/SIGINT; returns the exit code (0 after a clean stop).

    Args:
        sources: what ``serve`` accepts (artifacts, model folders, repositories, LM folders); every replica
            loads all of them, so the paths must be readable where the replicas run.
        replicas: fixed number of replicas (ignored when ``autoscaling`` is given).
        autoscaling: Ray Serve autoscaling settings, e.g. ``{"min_replicas": 1, "max_replicas": 4,
            "target_ongoing_requests": 2}``.
        num_cpus: CPUs of the local Ray cluster (default: this machine's); not allowed with ``ray_address``.
        replica_cpus: CPUs Ray reserves per replica (default: a share of ``num_cpus`` that fits the largest
            replica count, at most 1; 1 on an existing cluster).
        host: address the Ray Serve HTTP proxy binds.
        port: port of the Ray Serve HTTP proxy.
        ray_address: an existing Ray cluster (``ray://`` or ``host:port``); default ``$RAY_ADDRESS``, else a new
            local cluster that lives as long as this process.
        **app_options: the keyword arguments of ``server.build_app`` (token, threads, batching, grace_s, ...).

    Returns:
        The process exit code.
    """
    ray, serve = import_ray_serve()
    from .server import build_app, configure_logging, model_names

    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    if address and num_cpus is not None:
        from ..errors import MlxportError

        raise MlxportError(f"num_cpus sizes a local Ray cluster; it cannot be given with the cluster {address}",
                           hint="Drop --ray-num-cpus, or drop --ray-address and unset RAY_ADDRESS.")
    paths = [str(Path(p).resolve()) for p in sources]
    options = dict(app_options)
    options["load_roots"] = [str(Path(p).resolve()) for p in options.get("load_roots", ())]
    configure_logging()
    # Check the sources here, before Ray starts: a bad path fails in a second, not after replica retries.
    probe = build_app(paths, **options)
    probe.state.executor.shutdown(wait=False)
    names = model_names(probe)
    del probe

    most = int(autoscaling["max_replicas"]) if autoscaling else replicas
    if replica_cpus is None:
        replica_cpus = 1.0 if address else min(1.0, (num_cpus or os.cpu_count() or 1) / max(1, most))
    deployment_options: dict[str, Any] = {
        "name": APP_NAME,
        "ray_actor_options": {"num_cpus": replica_cpus},
        # Ray's default of 5 would queue requests in the proxy that the replica's batcher should merge.
        "max_ongoing_requests": int(options.get("max_concurrency", 512)),
        "graceful_shutdown_timeout_s": float(options.get("grace_s", 30.0)),
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    if autoscaling:
        deployment_options["autoscaling_config"] = dict(autoscaling)
    else:
        deployment_options["num_replicas"] = replicas

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home from a model server
    init: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if not address:
        init.update(num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
                    object_store_memory=_OBJECT_STORE_BYTES)
    stop = threading.Event()
    try:
        ray.init(address=address, **init)
        stop = _install_signal_handlers()  # after ray.init, which installs its own SIGTERM handler
        # Serve's own INFO lines and access log would repeat mlxport's (JSON access log per request).
        serve_logging = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options={"host": host, "port": port}, logging_config=serve_logging)
        ingress = serve.ingress(_replica_builder(paths, options))()
        deployment = serve.deployment(ingress, **deployment_options)
        shape = (f"autoscaling {autoscaling['min_replicas']}..{autoscaling['max_replicas']} replicas"
                 if autoscaling else f"{replicas} replicas")
        print(f"mlxport serve --ray: starting {shape} on {address or 'a local Ray cluster'}", file=sys.stderr,
              flush=True)
        serve.run(deployment.bind(), name=APP_NAME, route_prefix="/", blocking=False, logging_config=serve_logging)
        print(f"mlxport serve --ray: http://{host}:{port}  models: {names}", file=sys.stderr, flush=True)
        stop.wait()
    except BaseException as exc:
        # A signal interrupts whatever the main thread is waiting in; inside Ray's C code the _Stop may surface
        # as another exception. Once stop is set, any of them is a requested stop, not a failure. During
        # ray.init, Ray's own SIGTERM handler raises SystemExit(SIGTERM): a requested stop too.
        if not (stop.is_set() or (isinstance(exc, SystemExit) and exc.code == signal.SIGTERM)):
            raise
    finally:
        # A second signal during shutdown must not cut it short (the orchestrator's SIGKILL is the backstop).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        _shutdown(ray, serve, local=not address)
    return 0


def _replica_builder(paths: list[str], options: dict[str, Any]) -> Callable[[], Any]:
    """A builder function for ``serve.ingress``: Ray pickles it by value and calls it on each replica."""

    def build() -> Any:
        from mlxport.serve.ray_serve import replica_app

        return replica_app(paths, options)

    return build


def replica_app(paths: list[str], options: dict[str, Any]) -> Any:
    """The app of one replica: ``build_app`` whose lifespan returns only once the models are loaded."""
    import asyncio

    from .server import build_app, configure_logging

    configure_logging()
    app = build_app(paths, **options)
    inner = app.router.lifespan_context
    repo, lm, executor = app.state.repo, app.state.lm, app.state.executor

    @asynccontextmanager
    async def lifespan(a: Any):  # type: ignore[no-untyped-def]
        async with inner(a) as state:
            # Ray marks a replica ready when the lifespan startup completes: hold it until loading is over
            # (loaded or failed: a failure shows in /ping and the repository index, as on one server).
            while not (repo.started and lm.started):
                await asyncio.sleep(0.05)
            yield state
        executor.shutdown(wait=False, cancel_futures=True)

    app.router.lifespan_context = lifespan
    return app


def _install_signal_handlers() -> threading.Event:
    """First SIGTERM/SIGINT: set the event and raise _Stop in the main thread (ends startup or the wait)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            return
        stop.set()
        raise _Stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


def _shutdown(ray: Any, serve: Any, *, local: bool) -> None:
    """Stop the deployment (drains in-flight requests), then Serve and Ray when this process started them."""
    print("mlxport serve --ray: shutting down", file=sys.stderr, flush=True)
    try:
        if not ray.is_initialized():
            return  # serve.shutdown() would start a cluster just to find nothing; ray.shutdown() still runs
        if local:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    except Exception as exc:  # noqa: BLE001 - still disconnect from / stop Ray below
        print(f"mlxport serve --ray: stopping Serve failed: {type(exc).__name__}: {exc}", file=sys.stderr,
              flush=True)
    finally:
        # Also after a signal inside ray.init: it stops the processes a half-started local cluster has.
        ray.shutdown()


__all__ = ["serve_ray", "replica_app", "import_ray_serve", "RAY_EXTRA"]

"""``mlxport serve``: one model server speaking SageMaker and the Open Inference Protocol (KServe v2 / Triton)."""

from __future__ import annotations

import argparse
import os
import re
from typing import Sequence

from ..formats import BY_BACKEND, suffix_list

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(text: str, flag: str) -> int:
    """'6MiB', '512MB', '2g' or a number of bytes -> bytes."""
    from . import UsageError

    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{flag} must be a size such as 6MiB, 512MB or 2GiB; got '{text}'")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def parse_autoscale(text: str) -> dict[str, int | float]:
    """'MIN:MAX' or 'MIN:MAX:TARGET' -> Ray Serve autoscaling settings."""
    from . import UsageError

    parts = text.split(":")
    try:
        low, high = int(parts[0]), int(parts[1])
        target = float(parts[2]) if len(parts) == 3 else 2.0
    except (ValueError, IndexError):
        low = high = -1
        target = 0.0
    if len(parts) not in (2, 3) or low < 0 or high < max(1, low) or target <= 0:
        raise UsageError(f"--autoscale must be MIN:MAX[:TARGET] with 0 <= MIN <= MAX, MAX >= 1 and TARGET > 0 "
                         f"(ongoing requests per replica, default 2); got '{text}'", hint="e.g. --autoscale 1:4")
    return {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": target}


def configure_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxport serve", description="Serve exported models over HTTP: SageMaker (/ping, /invocations, "
        "/models) and the Open Inference Protocol v2 (/v2/...), with dynamic batching, hot version swaps, "
        "Prometheus /metrics and an OpenAPI spec at /openapi.json. With no path, serves $SM_MODEL_DIR or "
        "/opt/ml/model (a SageMaker container).")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="a registry reference (models:/NAME@ALIAS or models:/NAME/N in MLflow, NAME@ALIAS in the local "
                             f"repository), an artifact ({suffix_list()}), a folder holding one, a folder of "
                             "numbered versions, a repository <repo>/<model>/<N>/<artifact>, or an exported LM "
                             "folder (mlxport export-lm; served under /v1: OpenAI completions and chat)")
    parser.add_argument("--host", default=os.environ.get("MLXPORT_HOST", "127.0.0.1"),
                        help="address to bind (default 127.0.0.1, or $MLXPORT_HOST; 0.0.0.0 exposes the server)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")),
                        help="TCP port (default $SAGEMAKER_BIND_TO_PORT or 8080)")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (default "
                        "$MLXPORT_TOKEN); health, ping and metrics stay open")
    parser.add_argument("--backend", choices=list(BY_BACKEND),
                        help="which artifact to use when a version folder holds several (default: ONNX first)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per model, LM folders included")
    parser.add_argument("--compute-threads", type=int, help="worker threads that run models (default min(4, CPUs))")
    parser.add_argument("--instances", type=int, default=1, help="batches run at once per model (default 1)")
    parser.add_argument("--no-batching", action="store_true", help="never merge concurrent requests")
    parser.add_argument("--max-batch-size", type=int, default=64, help="rows per merged batch (default 64)")
    parser.add_argument("--max-queue-delay-ms", type=float, default=0.0,
                        help="how long a batch waits for more requests (default 0: requests that queue while the "
                             "model is busy are merged, none waits on purpose)")
    parser.add_argument("--max-queue", type=int, default=8192,
                        help="rows queued per model before 503 + Retry-After (default 8192; an LM queues at most "
                             "256 requests)")
    parser.add_argument("--max-concurrency", type=int, default=512,
                        help="inference requests in flight before 503 + Retry-After (default 512)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds before a 504 (default 60)")
    parser.add_argument("--max-body-size", default="6MiB", help="larger bodies get 413 (default 6MiB)")
    parser.add_argument("--memory-limit", help="refuse models that would take the process over this size, e.g. 4GiB")
    parser.add_argument("--version-policy", default="latest",
                        help="latest, latest:N, all or specific:1,3 (default latest)")
    parser.add_argument("--poll-interval", type=float, default=2.0,
                        help="seconds between looks for new versions on disk (0: never; default 2)")
    parser.add_argument("--load-root", action="append", default=[], metavar="DIR",
                        help="a folder POST /models may load from (repeatable; the PATHs are always allowed)")
    parser.add_argument("--grace-period", type=float, default=30.0,
                        help="on SIGTERM, seconds in-flight requests get to finish (default 30)")
    parser.add_argument("--no-access-log", action="store_true", help="no JSON access log line per request")
    parser.add_argument("--lm-backend", choices=["auto", "genai", "onnxruntime"], default="auto",
                        help="how exported LM folders (served under /v1, the OpenAI API) generate: ONNX Runtime "
                             "GenAI or mlxport's loop on ONNX Runtime (default auto: GenAI when installed)")
    ray = parser.add_argument_group("Ray Serve (scale out: needs pip install \"mlxport[ray]\")")
    ray.add_argument("--ray", action="store_true",
                     help="run the same server as a Ray Serve deployment; every replica loads every model, --host/"
                          "--port are the Ray proxy's. Load/unload calls reach one replica: change models on disk")
    ray.add_argument("--replicas", type=int, help="replicas of the deployment (default 2)")
    ray.add_argument("--autoscale", metavar="MIN:MAX[:TARGET]",
                     help="autoscale between MIN and MAX replicas, aiming at TARGET ongoing requests per replica "
                          "(default 2)")
    ray.add_argument("--ray-address", help="an existing Ray cluster (default $RAY_ADDRESS, else a local cluster "
                                           "started and stopped with this process)")
    ray.add_argument("--ray-num-cpus", type=float, help="CPUs of the local Ray cluster (default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from ..serve.repository import VersionPolicy
    from . import UsageError

    numbers = {"--port": args.port, "--instances": args.instances, "--max-batch-size": args.max_batch_size,
               "--max-queue": args.max_queue, "--max-concurrency": args.max_concurrency}
    bad = [f"{k} {v}" for k, v in numbers.items() if v < (0 if k == "--port" else 1)]
    if args.port > 65535:  # a TCP port is 16 bits; the socket layer would raise OverflowError
        bad.append(f"--port {args.port} (at most 65535)")
    if args.request_timeout <= 0 or args.max_queue_delay_ms < 0 or args.poll_interval < 0 or args.grace_period < 0:
        bad.append("--request-timeout must be > 0; --max-queue-delay-ms, --poll-interval, --grace-period >= 0")
    if bad:
        raise UsageError(f"out of range: {', '.join(bad)}")
    try:
        VersionPolicy.parse(args.version_policy)
    except ValueError as exc:
        raise UsageError(f"--version-policy: {exc}") from None
    from ..serve.server import default_sources, serve

    paths = [_resolve(p) for p in args.paths] or default_sources()
    multi_model = os.environ.get("SAGEMAKER_MULTI_MODEL", "").lower() == "true"
    ray_options = _ray_options(args, multi_model)
    if multi_model:
        # SageMaker multi-model endpoints download each model under /opt/ml/models before POST /models.
        args.load_root.append(os.environ.get("SM_MULTI_MODEL_DIR", "/opt/ml/models"))
    if not paths and not multi_model:
        raise UsageError("no model to serve: give a PATH (an artifact, a folder or a repository)",
                         hint="In a SageMaker container the model is read from $SM_MODEL_DIR or /opt/ml/model; "
                              "set SAGEMAKER_MULTI_MODEL=true to start empty and add models with POST /models.")
    options = dict(
        token=args.token or os.environ.get("MLXPORT_TOKEN") or None,
        backend=args.backend, threads=args.threads, compute_threads=args.compute_threads, instances=args.instances,
        batching=not args.no_batching, max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms, max_queue_rows=args.max_queue,
        max_concurrency=args.max_concurrency, request_timeout_s=args.request_timeout,
        max_body_bytes=parse_size(args.max_body_size, "--max-body-size"),
        memory_limit=parse_size(args.memory_limit, "--memory-limit") if args.memory_limit else None,
        version_policy=args.version_policy, poll_interval_s=args.poll_interval, load_roots=args.load_root,
        grace_s=args.grace_period, access_log=not args.no_access_log, lm_backend=args.lm_backend)
    if ray_options is not None:
        from ..serve.ray_serve import serve_ray

        return serve_ray(paths, host=args.host, port=args.port, **ray_options, **options)
    return serve(paths, host=args.host, port=args.port, **options)


def _ray_options(args: argparse.Namespace, multi_model: bool) -> dict | None:
    """The serve_ray arguments of the Ray flags (None without --ray); conflicting flags are UsageErrors."""
    from . import UsageError

    flags = (("--replicas", args.replicas), ("--autoscale", args.autoscale), ("--ray-address", args.ray_address),
             ("--ray-num-cpus", args.ray_num_cpus))
    given = [flag for flag, value in flags if value is not None]
    if not args.ray:
        if given:
            raise UsageError(f"{given[0]} only applies with --ray", hint=f"Add --ray, or drop {given[0]}.")
        return None
    if args.replicas is not None and args.autoscale is not None:
        raise UsageError("--replicas and --autoscale conflict: a deployment has a fixed size or autoscales",
                         hint="Use --replicas N for a fixed size, or --autoscale MIN:MAX to autoscale.")
    if args.ray_address is not None and args.ray_num_cpus is not None:
        raise UsageError("--ray-address and --ray-num-cpus conflict: --ray-num-cpus sizes a local cluster, "
                         "--ray-address joins an existing one", hint="Drop one of them.")
    if args.replicas is not None and args.replicas < 1:
        raise UsageError(f"--replicas must be >= 1; got {args.replicas}")
    if args.ray_num_cpus is not None and args.ray_num_cpus <= 0:
        raise UsageError(f"--ray-num-cpus must be > 0; got {args.ray_num_cpus:g}")
    if multi_model:
        raise UsageError("--ray and SAGEMAKER_MULTI_MODEL=true conflict: POST /models would load a model on one "
                         "replica only", hint="Unset SAGEMAKER_MULTI_MODEL, or serve without --ray.")
    return {"replicas": args.replicas or 2,
            "autoscaling": parse_autoscale(args.autoscale) if args.autoscale else None,
            "num_cpus": args.ray_num_cpus, "ray_address": args.ray_address}


def _resolve(spec: str) -> str:
    """A path as given, or a registry reference (models:/name@alias, models:/name/3, name@alias) made local."""
    import re

    registry_ref = spec.startswith("models:/") or "@" in spec or re.fullmatch(r"[A-Za-z0-9][\w.-]*/[0-9]+", spec)
    if os.path.exists(spec) or not registry_ref:
        return spec
    # MLflow's download progress bar would go into the server's JSON log stream.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from ..registry import resolve

    return str(resolve(spec))

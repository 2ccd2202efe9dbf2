"""The models a server holds: discovery on disk, version policy, load/warm/swap, unload and rollback.

Layouts (Triton's, plus the single-file and SageMaker cases)::

    model.onnx                          one model named "model", version 1
    dir/model.onnx [+ sidecar]          a folder holding an artifact (SageMaker's /opt/ml/model): same
    dir/<N>/model.onnx                  one model named after the folder, numbered versions
    repo/<model>/<N>/model.onnx         a repository: many models (optional repo/<model>/config.pbtxt)

A new version is loaded and warmed on a worker thread while the current one keeps answering, then becomes
the default in one assignment on the event loop, so no request fails during a swap. The previous default
stays on a history stack for ``rollback``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..artifact import IOSpec, artifact_bytes, check_sha256, read_meta
from ..formats import BY_BACKEND, artifacts_in, format_of, is_artifact, suffix_list
from ..runners import Runner
from .batching import BatchConfig, Scheduler
from .errors import (Conflict, Forbidden, InsufficientMemory, InvalidInput, ModelLoadError, ModelNotFound,
                     ModelNotReady, ServeError)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION_RE = re.compile(r"^[0-9]{1,18}$")


@dataclass
class VersionPolicy:
    """Which versions of a model to serve: the latest ``n``, all, or a specific list (Triton's three policies)."""

    kind: str = "latest"
    n: int = 1
    versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        """``latest``, ``latest:N``, ``all`` or ``specific:1,3``."""
        kind, _, rest = text.partition(":")
        if kind == "all" and not rest:
            return cls("all")
        if kind == "latest":
            if not rest:
                return cls("latest", 1)
            if rest.isdigit() and int(rest) > 0:
                return cls("latest", int(rest))
        if kind == "specific":
            versions = tuple(v.strip() for v in rest.split(",") if v.strip())
            if versions and all(VERSION_RE.match(v) for v in versions):
                return cls("specific", versions=versions)
        raise ValueError(f"version policy must be 'latest', 'latest:N', 'all' or 'specific:1,3'; got '{text}'")

    def select(self, versions: list[str]) -> list[str]:
        """The versions to load, newest first."""
        ordered = sorted(versions, key=int, reverse=True)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: self.n]


@dataclass
class ServeOptions:
    """Server-wide settings that loading a model needs."""

    backend: str | None = None
    threads: int | None = None
    batch: BatchConfig = field(default_factory=BatchConfig)
    batching: bool = True
    memory_limit: int | None = None
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    load_roots: tuple[Path, ...] = ()


@dataclass(eq=False)
class ServedModel:
    """One loaded, warmed version of a model and its scheduler."""

    name: str
    version: str
    path: Path
    runner: Runner
    scheduler: Scheduler
    load_seconds: float
    meta: dict[str, Any]

    @property
    def inputs(self) -> list[IOSpec]:
        return self.runner.inputs

    @property
    def outputs(self) -> list[IOSpec]:
        return self.runner.outputs

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def platform(self) -> str:
        fmt = BY_BACKEND.get(self.runner.backend)
        return fmt.triton_platform if fmt else self.runner.backend

    async def infer(self, feed: dict[str, np.ndarray], timeout_s: float | None = None) -> list[np.ndarray]:
        """Run one request through the scheduler (batched with others where the model allows)."""
        return await self.scheduler.submit(feed, timeout_s)


@dataclass
class ModelEntry:
    """A model name: where its versions live, which are loaded, which answers by default."""

    name: str
    root: Path | None            # folder with numbered versions, or None for a single artifact
    artifact: Path | None = None  # the single artifact (root is None)
    loaded: dict[str, ServedModel] = field(default_factory=dict)
    default: str | None = None
    history: list[str] = field(default_factory=list)
    pinned: bool = False          # chosen by load(version) or rollback: polling does not move it
    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # version -> (state, reason)
    loading: set[str] = field(default_factory=set)
    config: dict[str, int] = field(default_factory=dict)
    unloaded: bool = False
    seen: dict[str, tuple[int, float]] = field(default_factory=dict)  # version -> (size, mtime) at last scan

    def on_disk(self) -> dict[str, Path]:
        """Version -> artifact folder or file, as the disk has them now."""
        if self.root is None:
            return {"1": self.artifact} if self.artifact is not None and self.artifact.exists() else {}
        if not self.root.is_dir():
            return {}
        return {p.name: p for p in self.root.iterdir() if p.is_dir() and VERSION_RE.match(p.name)}


class Repository:
    """All models of a server; every method runs on the event loop (loading itself on worker threads).

    Args:
        options: backend, batching, memory limit, version policy, load roots.
        executor: the compute thread pool shared by every model's scheduler.
        metrics: a ``Metrics`` (or None) told about loads and unloads.
        log: called with (event, fields) for structured log lines.
    """

    def __init__(self, options: ServeOptions, executor: Executor, metrics: Any = None,
                 log: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.options, self.executor, self.metrics = options, executor, metrics
        self.log = log or (lambda event, fields: None)
        self.entries: dict[str, ModelEntry] = {}
        self.started = False
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()

    # ---- discovery ----
    def add_source(self, source: Path, *, skip: Callable[[Path], bool] | None = None) -> list[str]:
        """Register the models a path holds (not loaded yet); returns their names.

        ``skip`` leaves out model folders another service takes (a repository's language models).
        """
        source = Path(source)
        if not source.exists():
            raise ModelLoadError(f"no such model path: {source}")
        found: list[ModelEntry] = []
        skipped = 0
        if source.is_file() or is_artifact(source):
            found.append(ModelEntry(safe_name(source.stem), None, artifact=source))
        elif artifacts_in(source):
            art = self._pick_artifact(source)
            found.append(ModelEntry(safe_name(art.stem if source.name in ("model", ".") else source.name),
                                    None, artifact=art))
        elif any(p.is_dir() and VERSION_RE.match(p.name) for p in source.iterdir()):
            found.append(ModelEntry(safe_name(source.name), source))
        else:
            for sub in sorted(p for p in source.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
                if skip is not None and skip(sub):
                    skipped += 1
                    continue
                if any(p.is_dir() and VERSION_RE.match(p.name) for p in sub.iterdir()):
                    found.append(ModelEntry(sub.name, sub))
        if not found and skipped:
            return []
        if not found:
            raise ModelLoadError(
                f"{source} holds no model: expected an artifact ({suffix_list()}), a folder with one, a "
                "folder of numbered version folders, or a repository <repo>/<model>/<N>/<artifact>")
        for entry in found:
            if entry.name in self.entries:
                raise Conflict(f"two models are named '{entry.name}' ({source}); rename one folder")
            if entry.root is not None:
                entry.config = _read_config(entry.root / "config.pbtxt")
            self.entries[entry.name] = entry
        return [e.name for e in found]

    def _pick_artifact(self, folder: Path) -> Path:
        arts = artifacts_in(folder)
        if not arts:
            raise ModelLoadError(f"{folder} holds no artifact ({suffix_list()})")
        want = self.options.backend
        if want:
            fmt = BY_BACKEND.get(want)
            if fmt is None:
                raise ModelLoadError(f"unknown backend '{want}'; choose one of {', '.join(BY_BACKEND)}")
            match = [a for a in arts if format_of(a) is fmt]
            if not match:
                raise ModelLoadError(f"--backend {want} needs a {fmt.suffix} file in {folder}; it has "
                                     f"{', '.join(a.name for a in arts)}")
            return match[0]
        return arts[0]  # in the format table's serving preference

    # ---- state ----
    def ready(self) -> bool:
        """True when every registered (not unloaded) model has a loaded, warmed default version."""
        return self.started and all(e.default is not None for e in self.entries.values() if not e.unloaded)

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model version to run (the default when ``version`` is None)."""
        if not NAME_RE.match(name):
            raise InvalidInput(f"model name must match {NAME_RE.pattern}; got '{name[:140]}'")
        entry = self.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"unknown model '{name}'; loaded models: {', '.join(sorted(self.entries)) or 'none'}")
        if entry.unloaded:
            raise ModelNotFound(f"model '{name}' is unloaded; POST /v2/repository/models/{name}/load to load it")
        if version is None:
            if entry.default is None:
                state, reason = _overall_state(entry)
                if state == "UNAVAILABLE":
                    raise ModelNotReady(f"model '{name}' could not be loaded: {reason}", headers={"Retry-After": "5"})
                raise ModelNotReady(f"model '{name}' is still loading", headers={"Retry-After": "1"})
            return entry.loaded[entry.default]
        if not VERSION_RE.match(version):
            raise InvalidInput(f"model version must be a number; got '{version[:40]}'")
        if version in entry.loaded:
            return entry.loaded[version]
        if version in entry.loading:
            raise ModelNotReady(f"model '{name}' version {version} is still loading", headers={"Retry-After": "1"})
        available = ", ".join(sorted(entry.loaded, key=int)) or "none"
        raise ModelNotFound(f"model '{name}' has no loaded version {version}; loaded versions: {available}")

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model version on disk or loaded, with its state."""
        rows = []
        for entry in sorted(self.entries.values(), key=lambda e: e.name):
            versions = set(entry.on_disk()) | set(entry.loaded) | set(entry.states)
            for v in sorted(versions, key=int):
                state, reason = entry.states.get(v, ("UNAVAILABLE", "not selected by the version policy"))
                if v in entry.loaded:
                    state, reason = "READY", "default" if v == entry.default else ""
                rows.append({"name": entry.name, "version": v, "state": state, "reason": reason})
        return rows

    # ---- loading ----
    async def start(self) -> None:
        """Load every registered model per the version policy (models load concurrently on threads)."""
        await asyncio.gather(*(self.sync(name) for name in list(self.entries)))
        self.started = True

    async def sync(self, name: str, *, force: bool = False) -> list[str]:
        """Bring one model in line with the disk and the policy: load new versions, unload dropped ones."""
        entry = self.entries[name]
        if entry.unloaded and not force:
            return []
        wanted = self._wanted(entry)
        new = [v for v in wanted if v not in entry.loaded and v not in entry.loading
               and (force or self._stable(entry, v))]
        results = await asyncio.gather(*(self._load_version(entry, v) for v in new), return_exceptions=True)
        loaded = [v for v, r in zip(new, results) if not isinstance(r, BaseException)]
        if not entry.pinned:
            ready = [v for v in wanted if v in entry.loaded]
            if ready and ready[0] != entry.default:
                self._set_default(entry, ready[0])
        keep = set(wanted) | ({entry.default} if entry.default else set())
        for v in [v for v in entry.loaded if v not in keep]:
            await self._unload_version(entry, v)
        return loaded

    def _wanted(self, entry: ModelEntry) -> list[str]:
        on_disk = entry.on_disk()
        return self.options.policy.select(list(on_disk)) if entry.root is not None else list(on_disk)

    def _stable(self, entry: ModelEntry, version: str) -> bool:
        """A version folder is loaded once its files stop changing (or its sidecar checksum matches)."""
        if entry.root is None or not self.started:
            return True
        folder = entry.on_disk()[version]
        files = [f for f in folder.rglob("*") if f.is_file()]
        stamp = (sum(f.stat().st_size for f in files), max((f.stat().st_mtime for f in files), default=0.0))
        previous = entry.seen.get(version)
        entry.seen[version] = stamp
        return bool(files) and previous == stamp

    async def _load_version(self, entry: ModelEntry, version: str) -> ServedModel:
        entry.loading.add(version)
        entry.states[version] = ("LOADING", "")
        try:
            source = entry.artifact if entry.root is None else entry.on_disk()[version]
            model = await asyncio.to_thread(self._load_blocking, entry.name, version, source, entry.config)
        except ServeError as exc:
            entry.states[version] = ("UNAVAILABLE", str(exc))
            self.log("load_failed", {"model": entry.name, "version": version, "error": str(exc)})
            raise
        except Exception as exc:  # noqa: BLE001 - a broken artifact must not take the server down
            entry.states[version] = ("UNAVAILABLE", f"{type(exc).__name__}: {exc}")
            self.log("load_failed", {"model": entry.name, "version": version, "error": str(exc)})
            raise ModelLoadError(f"cannot load model '{entry.name}' version {version}: {exc}") from exc
        finally:
            entry.loading.discard(version)
        model.scheduler.start()
        entry.loaded[version] = model
        entry.states[version] = ("READY", "")
        if self.metrics is not None:
            self.metrics.model_loaded(entry.name, version, model.load_seconds)
        self.log("loaded", {"model": entry.name, "version": version, "backend": model.backend,
                            "seconds": round(model.load_seconds, 3), "batched": model.scheduler.batched})
        return model

    def _load_blocking(self, name: str, version: str, source: Path, config: dict[str, int]) -> ServedModel:
        """Open the artifact, check memory, verify its checksum, warm it up (on a worker thread)."""
        from ..runners import load

        start = time.perf_counter()
        artifact = source if source.is_file() or is_artifact(source) else self._pick_artifact(source)
        meta = read_meta(artifact)
        if artifact.is_file() and check_sha256(artifact, meta):
            raise ModelLoadError(f"{artifact} does not match the sha256 in its metadata file: it is incomplete or "
                                 "was changed after export; export or copy it again")
        size = artifact_bytes(artifact)
        _check_memory(self.options.memory_limit, size, f"{name} version {version}")
        options: dict[str, Any] = {}
        if artifact.suffix == ".onnx":
            # Failures are answered as 500s with the message; ORT's own log line would only break the JSON logs.
            options.update(threads=self.options.threads or _default_threads(), spinning=False, log_severity=4)
        if artifact.suffix == ".mlxfn" and self.options.memory_limit:
            import mlx.core as mx

            mx.set_memory_limit(self.options.memory_limit)
        runner = load(artifact, **options)
        _warm_up(runner)
        _check_memory(self.options.memory_limit, 0, f"{name} version {version}", loaded=True)
        batch = dataclasses.replace(self.options.batch)  # per-model copy: config.pbtxt may override it
        if config.get("max_batch_size"):
            batch.max_batch_size = config["max_batch_size"]
        # Triton's max_batch_size 0: the model has no batch dimension, so requests are never merged.
        unbatched = config.get("max_batch_size") == 0
        if config.get("max_queue_delay_microseconds") is not None:
            batch.max_queue_delay_ms = config["max_queue_delay_microseconds"] / 1000
        if runner.backend in ("litert", "mlx", "coreml"):
            batch.instances = 1  # these interpreters are not safe to call from two threads at once
        label = f"{name}:{version}"
        metrics = self.metrics

        def observe(kind: str, seconds: float, size: int) -> None:
            if metrics is None:
                return
            if kind == "queue":
                metrics.queue(name, version, seconds)
            else:
                metrics.compute(name, version, seconds, size)

        def depth(n: int) -> None:
            if metrics is not None:
                metrics.queue_depth(name, version, n)

        scheduler = Scheduler(runner.run, self.executor, batch, batched=self.options.batching and not unbatched and _batched(runner),
                              label=label, observe=observe, depth=depth)
        return ServedModel(name, version, artifact, runner, scheduler, time.perf_counter() - start, meta)

    def _set_default(self, entry: ModelEntry, version: str) -> None:
        if entry.default is not None and entry.default != version:
            entry.history.append(entry.default)
            del entry.history[:-16]
        entry.default = version
        self.log("default", {"model": entry.name, "version": version})

    async def _unload_version(self, entry: ModelEntry, version: str) -> None:
        model = entry.loaded.pop(version)
        entry.states[version] = ("UNAVAILABLE", "unloaded")
        if entry.default == version:
            entry.default = None
        if self.metrics is not None:
            self.metrics.model_unloaded(entry.name, version)
        self.log("unloaded", {"model": entry.name, "version": version})
        # In-flight requests hold the ServedModel; its scheduler drains them before stopping.
        task = asyncio.create_task(model.scheduler.close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- control API ----
    async def load(self, name: str, version: str | None = None) -> ServedModel:
        """(Re)load a model from disk; with ``version``, load that one and make it the pinned default."""
        entry = self.entry(name)
        async with self._lock:
            entry.unloaded = False
            if version is None:
                entry.pinned = False
                await self.sync(name, force=True)
                if entry.default is None:
                    raise ModelLoadError(f"model '{name}' has no loadable version: {_overall_state(entry)[1]}")
                return entry.loaded[entry.default]
            if not VERSION_RE.match(version):
                raise InvalidInput(f"version must be a number; got '{version[:40]}'")
            if version not in entry.loaded:
                if version not in entry.on_disk():
                    raise ModelNotFound(f"model '{name}' has no version {version} on disk; versions: "
                                        f"{', '.join(sorted(entry.on_disk(), key=int)) or 'none'}")
                await self._load_version(entry, version)
            self._set_default(entry, version)
            entry.pinned = True
            return entry.loaded[version]

    async def unload(self, name: str, *, forget: bool = False) -> None:
        """Unload every version of a model (``forget``: also drop the name, as SageMaker's DELETE does)."""
        entry = self.entry(name)
        async with self._lock:
            for v in list(entry.loaded):
                await self._unload_version(entry, v)
            entry.unloaded = True
            entry.history.clear()
            if forget:
                del self.entries[name]

    async def rollback(self, name: str) -> ServedModel:
        """Make the previous default version the default again (loading it if the policy had unloaded it)."""
        entry = self.entry(name)
        async with self._lock:
            while entry.history:
                target = entry.history.pop()
                if target in entry.loaded or target in entry.on_disk():
                    break
            else:
                raise InvalidInput(f"model '{name}' has no previous version to roll back to "
                                   f"(default: {entry.default})")
            if target not in entry.loaded:
                await self._load_version(entry, target)
            current = entry.default
            entry.default = target
            entry.pinned = True
            self.log("rollback", {"model": name, "from": current, "to": target})
            return entry.loaded[target]

    async def add_model(self, name: str, url: str) -> ServedModel:
        """SageMaker multi-model ``POST /models``: register and load a model from a local path."""
        if not NAME_RE.match(name):
            raise InvalidInput(f"model_name must match {NAME_RE.pattern}; got '{name[:140]}'")
        if name in self.entries:
            raise Conflict(f"model '{name}' is already loaded; DELETE /models/{name} first")
        try:
            path = Path(url.removeprefix("file://")).resolve()
            exists = path.exists()
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"url must be a path on the server; got {url[:300]!r}: {exc}") from None
        roots = [r.resolve() for r in self.options.load_roots]
        if not any(path == r or r in path.parents for r in roots):
            raise Forbidden(f"models may be loaded only from under {', '.join(map(str, roots)) or '(no folder)'}; "
                            f"got {url[:300]}. Start the server with --load-root to allow another folder")
        async with self._lock:
            if not exists:
                raise ModelLoadError(f"no such model path: {url[:300]}")
            if path.is_dir() and any(p.is_dir() and VERSION_RE.match(p.name) for p in path.iterdir()):
                entry = ModelEntry(name, path)
                entry.config = _read_config(path / "config.pbtxt")
            else:
                entry = ModelEntry(name, None, artifact=path if path.is_file() else self._pick_artifact(path))
            self.entries[name] = entry
            # Not sync(): its "files stopped changing" check skips a version folder on first sight, and it keeps
            # load errors in the index only; this caller waits for the answer, so it gets the typed error (400, 507).
            wanted = self._wanted(entry)
            try:
                results = await asyncio.gather(*(self._load_version(entry, v) for v in wanted),
                                               return_exceptions=True)
            except BaseException:
                del self.entries[name]
                raise
            ready = [v for v in wanted if v in entry.loaded]
            if not ready:
                del self.entries[name]
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    raise errors[0]
                raise ModelLoadError(f"model '{name}' has no version the policy selects in {url[:300]}")
            self._set_default(entry, ready[0])
            return entry.loaded[entry.default]

    def entry(self, name: str) -> ModelEntry:
        """The registered model ``name`` (400 for a bad name, 404 for an unknown one)."""
        if not NAME_RE.match(name):
            raise InvalidInput(f"model name must match {NAME_RE.pattern}; got '{name[:140]}'")
        if name not in self.entries:
            raise ModelNotFound(f"unknown model '{name}'; models: {', '.join(sorted(self.entries)) or 'none'}")
        return self.entries[name]

    async def poll(self) -> None:
        """Look for new or removed versions of every versioned model (Triton's poll mode)."""
        async with self._lock:
            for name, entry in list(self.entries.items()):
                if entry.root is not None and not entry.unloaded:
                    try:
                        await self.sync(name)
                    except ServeError:
                        pass  # recorded in the entry's states and logged; the current default keeps serving

    async def close(self, grace_s: float = 30.0) -> None:
        """Drain and stop every scheduler."""
        closing = [m.scheduler.close(grace_s) for e in self.entries.values() for m in e.loaded.values()]
        await asyncio.gather(*closing, *self._background)


def safe_name(text: str) -> str:
    """A model name (NAME_RE) made from a file or folder name: other characters become "_"."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("._-") or "model"
    return name[:128]


def _default_threads() -> int:
    """Half the cores for a model's intra-op pool: the event loop and the other requests need the rest."""
    return max(1, (os.cpu_count() or 2) // 2)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _check_memory(limit: int | None, extra: int, label: str, *, loaded: bool = False) -> None:
    """Refuse a model whose weights (plus what the process holds) would go over the limit."""
    if not limit:
        return
    rss = _rss()
    if rss + extra > limit:
        what = "after loading" if loaded else f"needs about {extra / 2**20:.0f} MiB of weights on top of"
        raise InsufficientMemory(
            f"model {label} does not fit in --memory-limit {limit / 2**20:.0f} MiB: the server {what} "
            f"{rss / 2**20:.0f} MiB in use. Unload a model or raise --memory-limit")


def _warm_up(runner: Runner) -> None:
    """Run the model twice on zeros (dynamic dims at 1) so the first request pays no lazy initialisation."""
    from ..dtypes import numpy_dtype as _np_dtype

    feed = {}
    for spec in runner.inputs:
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in spec.shape]
        feed[spec.name] = np.zeros(shape, dtype=_np_dtype(spec.dtype))
    for _ in range(2):
        runner.run(feed)


def _batched(runner: Runner) -> bool:
    """Requests may be merged when every input and output has the same dynamic dimension first."""
    dims = [s.shape[0] if s.shape else 0 for s in runner.inputs + runner.outputs]
    return bool(dims) and all(isinstance(d, str) and d == dims[0] for d in dims)


def _overall_state(entry: ModelEntry) -> tuple[str, str]:
    if entry.loading:
        return "LOADING", ""
    reasons = [f"version {v}: {r}" for v, (s, r) in entry.states.items() if s == "UNAVAILABLE" and r]
    if reasons:
        return "UNAVAILABLE", "; ".join(reasons)
    if not entry.on_disk():
        return "UNAVAILABLE", "no version on disk"
    return "LOADING", ""


def _read_config(path: Path) -> dict[str, int]:
    """The scheduling fields of a Triton config.pbtxt (the rest describes the signature, which the artifact has)."""
    if not path.exists():
        return {}
    text = path.read_text(errors="replace")
    config = {}
    for key in ("max_batch_size", "max_queue_delay_microseconds"):
        match = re.search(rf"\b{key}\s*:\s*(\d+)", text)
        if match:
            config[key] = int(match.group(1))
    return config

"""The MLflow backend: each push is an MLflow model (pyfunc flavor) registered as a Model Registry version.

What goes where:
- the artifact, its metadata file and ``lineage.json`` are the model artifact ``mlxport`` of a
  ``python_function`` model whose ``predict`` runs the mlxport runner (so ``mlflow models serve`` works);
  the signature comes from the metadata file;
- lineage (sha256, size, verdict, source, MLX version, who and when, parent) is kept in model-version tags
  ``mlxport.*``;
- aliases are MLflow aliases; each alias's earlier targets are a registered-model tag
  ``mlxport.previous.<alias>`` (a JSON list) that ``rollback`` pops, and ``mlxport.history`` logs changes.

Alias moves are two MLflow calls (alias, then tag), not one transaction: two people promoting the same
alias at the same moment can leave the rollback history one entry off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..artifact import ArtifactMeta, file_sha256
from ..formats import format_of
from . import (DEFAULT_ALIAS, MLFLOW_PREFIX, AliasChange, ModelSpec, VersionInfo, check_alias, check_name,
               check_version, parse_spec)
from .errors import BackendUnavailableError, NotFoundError, RegistryError
from . import alias_target, rollback_target
from .local import tmp_name, clean_stale, lineage_fields, now, read_metadata, stage, who

EXPERIMENT = "mlxport"
TAG = "mlxport."
PROMOTE = "mlxport registry --backend mlflow promote"  # for hints: the command that sets an alias
HISTORY_LIMIT = 100


def import_mlflow() -> Any:
    """``import mlflow``, or a BackendUnavailableError that says how to install it."""
    try:
        import mlflow
    except ImportError as exc:
        raise BackendUnavailableError(f"the MLflow backend needs the mlflow package, which cannot be imported "
                                      f"({exc})", hint="pip install 'mlxport[mlflow]' (or pip install mlflow), "
                                      "or use the local repository: --backend local") from exc
    return mlflow


class MlflowRegistry:
    """Versions and aliases in the MLflow Model Registry of a tracking server.

    Args:
        tracking_uri: the tracking server (default ``$MLFLOW_TRACKING_URI``), e.g. ``http://127.0.0.1:5000``
            or ``sqlite:///mlflow.db``.
        cache_dir: where ``fetch`` downloads versions (default ``$MLXPORT_CACHE_DIR`` or
            ``~/.cache/mlxport/models``).
        experiment: the MLflow experiment that holds the runs pushes create.
    """

    backend = "mlflow"

    def __init__(self, tracking_uri: str | None = None, *, cache_dir: str | os.PathLike | None = None,
                 experiment: str = EXPERIMENT) -> None:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise BackendUnavailableError(
                "the MLflow backend needs a tracking server, but none is set",
                hint="Pass tracking_uri= (CLI: --tracking-uri URI) or set $MLFLOW_TRACKING_URI (e.g. "
                     "http://127.0.0.1:5000 or sqlite:///mlflow.db).")
        self.mlflow = import_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.cache_dir = Path(cache_dir or os.environ.get("MLXPORT_CACHE_DIR")
                              or Path.home() / ".cache" / "mlxport" / "models")
        self.experiment = experiment

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.uri!r})"

    # ---- writing
    def push(self, artifact: str | os.PathLike, name: str, *, description: str | None = None) -> VersionInfo:
        """Log the artifact as an MLflow pyfunc model and register it as the next version of ``name``.

        Args:
            artifact: an exported file (``.onnx``, ``.pt``, ...) with its metadata file beside it.
            name: the registered model name.
            description: the model version's description.

        Returns:
            The new version.
        """
        mlflow = self.mlflow
        name = check_name(name)
        artifact = Path(artifact)
        meta = read_metadata(artifact)
        from .pyfunc import ARTIFACT_KEY, LINEAGE_FILE, MODEL_CODE

        with self._errors(), tempfile.TemporaryDirectory(prefix="mlxport-push-") as tmp:
            folder = Path(tmp) / ARTIFACT_KEY
            staged = stage(artifact, name, folder, meta)
            parent = self._latest(name)
            lineage = {
                "name": name, "artifact": staged.artifact, **lineage_fields(artifact, meta), "sha256": staged.files, "size": staged.size, "pushed_at": now(),
                "pushed_by": who(), "parent": parent, "description": description,
            }
            (folder / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, default=str))
            code = Path(tmp) / "mlxport_model.py"
            code.write_text(MODEL_CODE)
            signature = _signature(meta, artifact)
            with self._tracking(), warnings.catch_warnings():
                # MLflow suggests predict type hints and an input example; the signature comes from the metadata.
                warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
                with mlflow.start_run(experiment_id=self._experiment_id(), run_name=f"push {name}"):
                    mlflow.set_tags({f"{TAG}name": name, f"{TAG}verdict": lineage["verdict"],
                                     f"{TAG}artifact": staged.artifact})
                    info = mlflow.pyfunc.log_model(
                        name="model", python_model=str(code), artifacts={ARTIFACT_KEY: str(folder)},
                        signature=signature, pip_requirements=_requirements(artifact),
                        registered_model_name=name, await_registration_for=120,
                        metadata={"mlxport": {"artifact": staged.artifact,
                                              "sha256": staged.files.get(staged.artifact)}})
            version = str(info.registered_model_version)
            tags = {"artifact": staged.artifact, "sha256": staged.files.get(staged.artifact, ""),
                    "size": staged.size, "verdict": lineage["verdict"], "format": lineage["format"],
                    "source": lineage["source"], "mlx_version": lineage["mlx_version"],
                    "pushed_at": lineage["pushed_at"], "pushed_by": lineage["pushed_by"], "parent": parent}
            for key, value in tags.items():
                if value is not None:
                    self.client.set_model_version_tag(name, version, TAG + key, str(value))
            if description:
                self.client.update_model_version(name, version, description=description)
            return self._info(self.client.get_model_version(name, version))

    def promote(self, name: str, version: int | str, alias: str = DEFAULT_ALIAS) -> AliasChange:
        """Set the MLflow alias ``alias`` of ``name`` to ``version`` (the old target is kept for rollback).

        Args:
            name: the registered model.
            version: the version number.
            alias: the alias (default ``production``).

        Returns:
            The change made.
        """
        name, alias, number = check_name(name), check_alias(alias), check_version(version)
        with self._errors():
            self.client.get_model_version(name, str(number))
            model = self.client.get_registered_model(name)
            previous = _int(model.aliases.get(alias))
            stack = _stack(model.tags, alias)
            if previous is not None and previous != number:
                stack.append(previous)
            self.client.set_registered_model_alias(name, alias, str(number))
            self._save(name, model.tags, alias, stack, "promote", number, previous)
        return AliasChange(name, alias, number, previous, "promote")

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> AliasChange:
        """Move the alias back to the version it named before its last promotion.

        Args:
            name: the registered model.
            alias: the alias (default ``production``).

        Returns:
            The change made.
        """
        name, alias = check_name(name), check_alias(alias)
        with self._errors():
            model = self.client.get_registered_model(name)
            current = alias_target(name, alias, {a: int(v) for a, v in model.aliases.items()}, PROMOTE)
            stack = _stack(model.tags, alias)
            target = rollback_target(name, alias, current, stack, {int(v.version) for v in self._search(name)},
                                     PROMOTE)
            self.client.set_registered_model_alias(name, alias, str(target))
            self._save(name, model.tags, alias, stack, "rollback", target, current)
        return AliasChange(name, alias, target, current, "rollback")

    # ---- reading
    def models(self) -> list[str]:
        """The registered model names."""
        with self._errors():
            return sorted(m.name for m in self.client.search_registered_models())

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of a registered model, oldest first."""
        name = check_name(name)
        with self._errors():
            aliases = self._aliases(name)  # raises the not-found error for an unknown model
            found = sorted(self._search(name), key=lambda v: int(v.version))
            return [self._info(v, aliases.get(str(v.version), [])) for v in found]

    def show(self, spec: str | ModelSpec) -> VersionInfo:
        """One version: ``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME`` (newest); a ``models:/`` prefix is allowed."""
        spec = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
        with self._errors():
            aliases = self._aliases(spec.name)
            if spec.alias is not None:
                mv = self.client.get_model_version_by_alias(spec.name, spec.alias)
            elif spec.version is not None:
                mv = self.client.get_model_version(spec.name, str(spec.version))
            else:
                latest = self._latest(spec.name)
                if latest is None:
                    raise NotFoundError(f"registered model '{spec.name}' has no version",
                                        hint=f"mlxport registry --backend mlflow push ARTIFACT --name {spec.name}")
                mv = self.client.get_model_version(spec.name, str(latest))
            return self._info(mv, aliases.get(str(mv.version), []))

    def fetch(self, spec: str | ModelSpec) -> Path:
        """Download a version's artifact into the cache (once; checked against its sha256) and return it."""
        info = self.show(spec)
        if not info.artifact:
            raise RegistryError(f"models:/{info.name}/{info.version} was not pushed by mlxport (it has no "
                                f"{TAG}artifact tag)", hint=f"Serve it with: mlflow models serve -m "
                                f"models:/{info.name}/{info.version}")
        expected = info.lineage.get("tags", {}).get(f"{TAG}sha256")
        key = hashlib.sha1(self.uri.encode()).hexdigest()[:12]
        dest = self.cache_dir / "mlflow" / key / info.name / str(info.version)
        path = dest / info.artifact
        if path.exists() and (not expected or not path.is_file() or file_sha256(path) == expected):
            return path
        dest.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(dest.parent)
        tmp = dest.parent / tmp_name(".tmp-")
        try:
            with self._errors(), self._tracking():  # models:/ URIs resolve through the global registry URI
                from mlflow.artifacts import download_artifacts

                from .pyfunc import ARTIFACT_KEY

                got = Path(download_artifacts(artifact_uri=f"{MLFLOW_PREFIX}{info.name}/{info.version}",
                                              dst_path=str(tmp), tracking_uri=self.uri))
            folder = got / "artifacts" / ARTIFACT_KEY
            if not (folder / info.artifact).exists():
                raise RegistryError(f"models:/{info.name}/{info.version} has no artifacts/{ARTIFACT_KEY}/"
                                    f"{info.artifact}", hint="Push the artifact again with mlxport registry push.")
            if expected and (folder / info.artifact).is_file() and file_sha256(folder / info.artifact) != expected:
                raise RegistryError(f"the download of models:/{info.name}/{info.version} does not match its "
                                    f"{TAG}sha256 tag", hint="Try again; if it persists, push the artifact again.")
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(folder, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    # ---- helpers
    @contextlib.contextmanager
    def _tracking(self) -> Iterator[None]:
        """Point MLflow's fluent API (start_run, log_model) at this server, then put back exactly what was set.

        ``mlflow.set_tracking_uri`` also writes $MLFLOW_TRACKING_URI (and the registry's $MLFLOW_REGISTRY_URI),
        so both module globals and both variables are restored: a caller's unset URI stays unset.
        """
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
        saved_env = {k: os.environ.get(k) for k in names}
        saved = (getattr(tracking_utils, "_tracking_uri", None), getattr(registry_utils, "_registry_uri", None))
        self.mlflow.set_tracking_uri(self.uri)
        self.mlflow.set_registry_uri(self.uri)
        try:
            yield
        finally:
            self.mlflow.set_tracking_uri(saved[0])
            registry_utils._registry_uri = saved[1]
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn MLflow's exceptions into registry errors that name the server."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as exc:
            message = str(getattr(exc, "message", exc))
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in message.lower():
                raise NotFoundError(f"MLflow ({self.uri}): {message}") from exc
            raise RegistryError(f"MLflow ({self.uri}): {message}",
                                hint="Check that the tracking server is running and the URI is right.") from exc

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # created by a concurrent push
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def _search(self, name: str) -> list[Any]:
        return list(self.client.search_model_versions(f"name='{name}'"))

    def _aliases(self, name: str) -> dict[str, list[str]]:
        """Version -> its aliases (search results and some getters carry none)."""
        found: dict[str, list[str]] = {}
        for alias, version in self.client.get_registered_model(name).aliases.items():
            found.setdefault(str(version), []).append(alias)
        return found

    def _latest(self, name: str) -> int | None:
        return max((int(v.version) for v in self._search(name)), default=None)

    def _save(self, name: str, tags: dict[str, str], alias: str, stack: list[int], action: str, version: int,
              previous: int | None) -> None:
        self.client.set_registered_model_tag(name, f"{TAG}previous.{alias}", json.dumps(stack[-HISTORY_LIMIT:]))
        try:
            history = json.loads(tags.get(f"{TAG}history", "[]"))
        except json.JSONDecodeError:
            history = []
        history.append({"action": action, "alias": alias, "version": version, "previous": previous, "at": now(),
                        "by": who()})
        self.client.set_registered_model_tag(name, f"{TAG}history", json.dumps(history[-HISTORY_LIMIT:]))

    def _info(self, mv: Any, aliases: list[str] | None = None) -> VersionInfo:
        tags = dict(mv.tags or {})
        return VersionInfo(
            name=mv.name, version=int(mv.version), aliases=sorted(aliases or getattr(mv, "aliases", None) or []),
            size=int(tags.get(f"{TAG}size") or 0),
            verdict=tags.get(f"{TAG}verdict", "unknown (not pushed by mlxport)"),
            location=f"{MLFLOW_PREFIX}{mv.name}/{mv.version}", artifact=tags.get(f"{TAG}artifact", ""),
            pushed_at=tags.get(f"{TAG}pushed_at"), pushed_by=tags.get(f"{TAG}pushed_by"),
            source=tags.get(f"{TAG}source"), parent=_int(tags.get(f"{TAG}parent")),
            lineage={"tags": tags, "run_id": mv.run_id, "model_source": mv.source, "status": mv.status,
                     "description": mv.description})


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _stack(tags: dict[str, str], alias: str) -> list[int]:
    try:
        return [int(v) for v in json.loads(tags.get(f"{TAG}previous.{alias}", "[]"))]
    except (json.JSONDecodeError, TypeError, ValueError):
        return []


def _signature(meta: ArtifactMeta, artifact: Path) -> Any:
    """An MLflow tensor signature from the metadata (dynamic dims -1); None when a dtype has no numpy type."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    inputs, outputs = [i.to_dict() for i in meta.inputs], [o.to_dict() for o in meta.outputs]
    if not inputs and artifact.suffix == ".onnx":
        from ..runners import load

        runner = load(artifact)
        inputs, outputs = [i.to_dict() for i in runner.inputs], [o.to_dict() for o in runner.outputs]
    if not inputs or not outputs:
        return None
    specs = []
    for group in (inputs, outputs):
        if any(d.get("dtype") == "bfloat16" for d in group):
            return None  # MLflow's schema has no bfloat16
        specs.append(Schema([TensorSpec(np.dtype(d["dtype"]), tuple(x if isinstance(x, int) and x >= 0 else -1
                                                                      for x in d["shape"]), d["name"])
                             for d in group]))
    return ModelSignature(inputs=specs[0], outputs=specs[1])


def _requirements(artifact: Path) -> list[str]:
    """Pinned pip requirements of the pyfunc model: mlxport and the runtime the artifact needs."""
    from importlib.metadata import PackageNotFoundError, version

    fmt = format_of(artifact)
    wanted = ["mlxport", "numpy", "cloudpickle"] + list(fmt.requirements if fmt else ())
    pins = []
    for package in wanted:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins

"""SageMaker bundle: ``model.tar.gz`` (extracted by SageMaker to /opt/ml/model), a Dockerfile and ``deploy.py``.

The container runs ``mlxport serve`` with no path: it serves $SM_MODEL_DIR or /opt/ml/model on
$SAGEMAKER_BIND_TO_PORT (8080 by default), so ``docker run IMAGE serve`` is what SageMaker starts.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
from importlib import resources
from pathlib import Path

from ..formats import BY_SUFFIX
from . import target_formats
from .common import Bundle, Source, Staging, bundle_name, files_under, open_source, write_json
from .errors import PackageError

BASE_IMAGE = "python:3.11-slim"
PORT = 8080
LABELS = {"com.amazonaws.sagemaker.capabilities.accept-bind-to-port": "true",
          "com.amazonaws.sagemaker.capabilities.multi-models": "true"}


def dockerfile_text(artifact_suffix: str, wheel: str | None = None) -> str:
    """The Dockerfile: mlxport[serve] on python:3.11-slim, exec-form ENTRYPOINT so ``docker run IMAGE serve`` works.

    Args:
        artifact_suffix: the artifact's suffix (picks the runtime packages to install).
        wheel: file name of an mlxport wheel in the build context's ``wheels/`` folder (None: install
            mlxport from the package index at this version).

    Returns:
        The Dockerfile text.
    """
    from .. import __version__

    fmt = BY_SUFFIX.get(artifact_suffix)
    extras = ",".join(["serve", *(fmt.run_extras if fmt else ())])
    requirement = f"/tmp/wheels/{wheel}[{extras}]" if wheel else f"mlxport[{extras}]=={__version__}"
    packages = " ".join(f'"{p}"' for p in [requirement, *(fmt.run_packages if fmt else ())])
    lines = [
        "# Built by `mlxport package --target sagemaker`. SageMaker starts it as `docker run IMAGE serve`:",
        "# the model is extracted from model.tar.gz to /opt/ml/model and the port comes from",
        "# $SAGEMAKER_BIND_TO_PORT (8080 by default). No credentials belong in this image.",
        f"FROM {BASE_IMAGE}",
        *[f"LABEL {k}={v}" for k, v in LABELS.items()],
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MLXPORT_HOST=0.0.0.0",
    ]
    if wheel:
        lines += ["COPY wheels/ /tmp/wheels/",
                  f"RUN pip install --no-cache-dir {packages} && rm -rf /tmp/wheels"]
    else:
        lines += [f"RUN pip install --no-cache-dir {packages}"]
    lines += [f"EXPOSE {PORT}", 'ENTRYPOINT ["mlxport"]', 'CMD ["serve"]']
    return "\n".join(lines) + "\n"


def write_model_tar(source: Source, name: str, path: Path) -> list[str]:
    """``model.tar.gz`` with the artifact, its side files and its metadata at the root; returns the member names.

    The archive is reproducible: fixed owner, modes and timestamps, and a gzip header without a time.
    """
    staging = path.parent / f".{path.name}.files"
    members = [p.name for p in source.copy_to(staging, name + source.suffix)]

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    try:
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for member in members:
                    tar.add(staging / member, arcname=member, filter=normalise)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return members


def _readme(name: str, tar_members: list[str]) -> str:
    return f"""# SageMaker bundle for `{name}`

Written by `mlxport package --target sagemaker`.

- `model.tar.gz`: {", ".join(tar_members)}. SageMaker extracts it to `/opt/ml/model`.
- `Dockerfile`: the serving image (`docker run IMAGE serve` runs `mlxport serve` on port 8080
  or `$SAGEMAKER_BIND_TO_PORT`; `/ping`, `/invocations`, the multi-model API and `/v2/...`).
- `deploy.py`: uploads `model.tar.gz` to S3, creates the model, endpoint config and endpoint, then
  invokes it once. Needs boto3 and AWS credentials from the usual places (never stored here).

## Try it locally
```
mkdir -p model && tar -xzf model.tar.gz -C model
docker build -t {name.lower()}-mlxport .
docker run --rm -p 8080:8080 -v "$PWD/model:/opt/ml/model:ro" {name.lower()}-mlxport serve
curl -s localhost:8080/ping
```
Without Docker: `SM_MODEL_DIR=$PWD/model mlxport serve` does the same.

## Deploy
Push the image to ECR, then:
```
python deploy.py --image ACCOUNT.dkr.ecr.REGION.amazonaws.com/{name.lower()}-mlxport:latest \\
    --bucket BUCKET --role arn:aws:iam::ACCOUNT:role/ROLE --region REGION --instance-type ml.m5.large
python deploy.py --dry-run ...   # print the API calls without making them
python deploy.py --delete --endpoint-name NAME --region REGION   # remove the endpoint again
```
"""


def package_sagemaker(artifact: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
                      wheel: str | os.PathLike | None = None, force: bool = False) -> Bundle:
    """Write model.tar.gz, Dockerfile, .dockerignore, deploy.py, bundle.json and README.md; see ``package``."""
    source = open_source(artifact, "sagemaker", target_formats("sagemaker"))
    name = bundle_name(name, source.path)
    wheel_path = Path(wheel) if wheel is not None else None
    if wheel_path is not None and (not wheel_path.is_file() or wheel_path.suffix != ".whl"
                                   or not wheel_path.name.startswith("mlxport-")):
        raise PackageError(f"--wheel must be an existing mlxport-*.whl file; got {wheel_path}",
                           hint="Build one with `pip wheel --no-deps -w dist .` in the mlxport source tree.")
    out = Path(out_dir)
    entries = ["model.tar.gz", "Dockerfile", ".dockerignore", "deploy.py", "bundle.json", "README.md"]
    if wheel_path is not None:
        entries.insert(2, f"wheels/{wheel_path.name}")
    protect = source.files + ([wheel_path] if wheel_path is not None else [])
    stage = Staging(out, protect, force=force)
    stage.plan(*entries)
    with stage:
        members = write_model_tar(source, name, stage.path("model.tar.gz"))
        stage.path("Dockerfile").write_text(dockerfile_text(source.suffix, wheel_path.name if wheel_path else None))
        # Only the wheel goes into the build context: the model comes from S3, not from the image.
        stage.path(".dockerignore").write_text("*\n!wheels/\n")
        if wheel_path is not None:
            shutil.copyfile(wheel_path, stage.path(f"wheels/{wheel_path.name}"))
        template = resources.files("mlxport.package.templates").joinpath("sagemaker_deploy.py")
        stage.path("deploy.py").write_text(template.read_text())
        from .. import __version__

        write_json(stage.path("bundle.json"), {
            "target": "sagemaker", "name": name, "artifact": name + source.suffix, "format": source.format,
            "sha256": source.sha256, "inputs": [vars(i) for i in source.inputs],
            "outputs": [vars(o) for o in source.outputs], "mlxport_version": __version__, "port": PORT,
            "content_types": ["application/json", "application/x-npy", "application/x-npz",
                              "application/octet-stream"]})
        stage.path("README.md").write_text(_readme(name, members))
    notes = [f"model.tar.gz holds {', '.join(members)}",
             f"build: docker build -t {name.lower()}-mlxport {out}",
             f"try without Docker: tar -xzf {out / 'model.tar.gz'} -C DIR && SM_MODEL_DIR=DIR mlxport serve",
             f"deploy: python {out / 'deploy.py'} --help"]
    return Bundle("sagemaker", out, files_under([out / e for e in entries]), notes)

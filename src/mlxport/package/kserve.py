"""KServe: an ``InferenceService`` manifest (Triton runtime, Open Inference Protocol v2) plus the Triton repository.

``<out>/inferenceservice.yaml`` points its storageUri at wherever ``<out>/model_repository/`` is uploaded;
the manifest is read back and checked against the fields KServe requires before anything is moved into place.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from . import target_formats
from .common import Bundle, Staging, bundle_name, files_under, open_source
from .errors import MissingDependencyError, PackageError
from .triton import plan_model

API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME = "kserve-tritonserver"
DEFAULT_STORAGE_URI = "s3://BUCKET/path"
FORMATS = ("triton", "onnx")
# KServe's own rule for InferenceService names: a DNS-1123 label that starts with a letter.
ISVC_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ISVC_NAME_MAX = 63
STORAGE_SCHEMES = ("s3", "gs", "pvc", "http", "https", "hdfs", "webhdfs", "oci", "hf", "azureblob")
QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SCALE = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def isvc_name(name: str) -> str:
    """A model name made into a valid InferenceService name (lower case, '-' for '_' and '.')."""
    text = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    text = re.sub(r"-{2,}", "-", text)
    if not text or not text[0].isalpha():
        text = f"m-{text}".rstrip("-")
    return text[:ISVC_NAME_MAX].rstrip("-")


def _quantity(text: Any) -> float | None:
    match = QUANTITY_RE.match(str(text))
    return float(match.group(1)) * _SCALE[match.group(2)] if match else None


def check_manifest(doc: Any) -> list[str]:
    """Problems with an InferenceService document (empty when KServe would accept its required fields).

    Args:
        doc: the parsed YAML document.

    Returns:
        One message per problem.
    """
    problems: list[str] = []

    def mapping(obj: Any, where: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            problems.append(f"{where} must be a mapping; got {type(obj).__name__}")
            return {}
        return obj

    doc = mapping(doc, "the document")
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion must be {API_VERSION}; got {doc.get('apiVersion')!r}")
    if doc.get("kind") != "InferenceService":
        problems.append(f"kind must be InferenceService; got {doc.get('kind')!r}")
    name = mapping(doc.get("metadata"), "metadata").get("name")
    if not isinstance(name, str) or not ISVC_NAME_RE.match(name) or len(name) > ISVC_NAME_MAX:
        problems.append(f"metadata.name must be lower-case letters, digits and '-', start with a letter, end with "
                        f"a letter or digit, at most {ISVC_NAME_MAX} characters; got {name!r}")
    predictor = mapping(mapping(doc.get("spec"), "spec").get("predictor"), "spec.predictor")
    model = mapping(predictor.get("model"), "spec.predictor.model")
    fmt = mapping(model.get("modelFormat"), "spec.predictor.model.modelFormat").get("name")
    if not isinstance(fmt, str) or not fmt:
        problems.append(f"spec.predictor.model.modelFormat.name must be a non-empty string; got {fmt!r}")
    uri = model.get("storageUri")
    if not isinstance(uri, str) or "://" not in uri or uri.split("://", 1)[0] not in STORAGE_SCHEMES:
        problems.append(f"spec.predictor.model.storageUri must be a URI with one of the schemes "
                        f"{', '.join(STORAGE_SCHEMES)}; got {uri!r}")
    if model.get("protocolVersion", "v1") not in ("v1", "v2", "grpc-v2"):
        problems.append(f"spec.predictor.model.protocolVersion must be v1, v2 or grpc-v2; got "
                        f"{model.get('protocolVersion')!r}")
    if "runtime" in model and not isinstance(model["runtime"], str):
        problems.append(f"spec.predictor.model.runtime must be a string; got {model['runtime']!r}")
    resources = mapping(model.get("resources", {}), "spec.predictor.model.resources")
    amounts: dict[str, dict[str, float]] = {}
    for section in ("requests", "limits"):
        values = mapping(resources.get(section, {}), f"resources.{section}")
        for key, value in values.items():
            q = _quantity(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
            if q is None:
                problems.append(f"resources.{section}.{key} must be a Kubernetes quantity such as 1, 500m or 2Gi; "
                                f"got {value!r}")
            else:
                amounts.setdefault(section, {})[key] = q
    for key, req in amounts.get("requests", {}).items():
        lim = amounts.get("limits", {}).get(key)
        if lim is not None and req > lim:
            problems.append(f"resources.requests.{key} ({resources['requests'][key]}) is above "
                            f"resources.limits.{key} ({resources['limits'][key]})")
    return problems


def manifest(name: str, storage_uri: str, *, model_format: str = "triton", cpu: str = "1",
             memory: str = "2Gi", gpus: int = 0) -> dict[str, Any]:
    """The InferenceService document (requests equal limits, so the pod gets what it asks for)."""
    resources: dict[str, Any] = {"cpu": str(cpu), "memory": str(memory)}
    limits = dict(resources)
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"mlxport/model": name}},
        "spec": {"predictor": {"model": {
            "modelFormat": {"name": model_format},
            "runtime": RUNTIME,
            "protocolVersion": "v2",
            "storageUri": storage_uri,
            "resources": {"requests": resources, "limits": limits},
        }}},
    }


def _default_memory(artifact_bytes: int) -> str:
    """Room for Triton (~1 GiB) plus a few copies of the weights, in whole GiB."""
    return f"{max(2, 1 + math.ceil(3 * artifact_bytes / 2**30))}Gi"


def _readme(isvc: str, model: str, storage_uri: str) -> str:
    return f"""# KServe bundle for `{model}`

Written by `mlxport package --target kserve`.

- `model_repository/`: a Triton model repository (`{model}/config.pbtxt`, `{model}/1/model.onnx`).
- `inferenceservice.yaml`: InferenceService `{isvc}` on the `{RUNTIME}` runtime, Open Inference Protocol v2,
  reading the repository from `{storage_uri}`.

```
aws s3 cp --recursive model_repository/ {storage_uri.rstrip('/')}/
kubectl apply -f inferenceservice.yaml
curl -s -H "Host: $SERVICE_HOSTNAME" http://$INGRESS/v2/models/{model}/ready
```
The same repository runs locally with `mlxport serve model_repository` (same /v2 API).
"""


def package_kserve(artifact: str | os.PathLike, out_dir: str | os.PathLike, *, name: str | None = None,
                   storage_uri: str | None = None, model_format: str = "triton", cpu: str = "1",
                   memory: str | None = None, gpus: int = 0, max_batch_size: int | None = None,
                   max_queue_delay_us: int = 2000, instances: int = 1, validate: bool = True,
                   force: bool = False) -> Bundle:
    """Write inferenceservice.yaml, model_repository/ and README.md; see ``mlxport.package.package``."""
    try:
        import yaml
    except ImportError as exc:
        raise MissingDependencyError("the kserve target writes and checks YAML with PyYAML, which is not "
                                     "installed", hint="pip install pyyaml") from exc
    if model_format not in FORMATS:
        raise PackageError(f"--model-format must be one of {', '.join(FORMATS)}; got '{model_format}'")
    if gpus < 0:
        raise PackageError(f"--gpus must be >= 0; got {gpus}")
    source = open_source(artifact, "kserve", target_formats("kserve"))
    name = bundle_name(name, source.path)
    out = Path(out_dir)
    repo = out / "model_repository"
    model = plan_model(source, repo, name=name, max_batch_size=max_batch_size,
                       max_queue_delay_us=max_queue_delay_us, instances=instances,
                       instance_kind="gpu" if gpus else "cpu", validate=validate, force=force, versions=False)
    size = sum(p.stat().st_size for p in [source.path, *source.data_files])
    doc = manifest(isvc_name(name), storage_uri or DEFAULT_STORAGE_URI, model_format=model_format, cpu=cpu,
                   memory=memory or _default_memory(size), gpus=gpus)
    text = yaml.safe_dump(doc, sort_keys=False)
    problems = check_manifest(yaml.safe_load(text))
    if problems:
        raise PackageError("the InferenceService manifest would not be accepted by KServe:\n  - "
                           + "\n  - ".join(problems))
    stage = Staging(out, source.files, force=force)
    stage.plan(*model.entries("model_repository/"), "inferenceservice.yaml", "README.md")
    with stage:
        model.build(stage, "model_repository/")
        stage.path("inferenceservice.yaml").write_text(text)
        stage.path("README.md").write_text(_readme(doc["metadata"]["name"], name, doc["spec"]["predictor"]["model"]
                                                   ["storageUri"]))
    notes = model.notes + [f"upload {repo} to {doc['spec']['predictor']['model']['storageUri']}, then "
                           f"kubectl apply -f {out / 'inferenceservice.yaml'}"]
    if storage_uri is None:
        notes.append(f"storageUri is the placeholder {DEFAULT_STORAGE_URI}: pass --storage-uri or edit the manifest")
    return Bundle("kserve", out / "inferenceservice.yaml",
                  files_under([out / "inferenceservice.yaml", out / "README.md", repo / name]), notes)

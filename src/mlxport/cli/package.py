"""``mlxport package``: SageMaker, Triton, KServe and edge bundles of an exported artifact."""

from __future__ import annotations

import argparse
from typing import Sequence


# dest -> flag, for the per-target options (all default to None so "given" is known).
_TARGET_FLAGS = {
    "wheel": "--wheel", "version": "--version", "max_batch_size": "--max-batch-size",
    "max_queue_delay_us": "--max-queue-delay-us", "instances": "--instances", "instance_kind": "--instance-kind",
    "version_policy": "--version-policy", "validate": "--no-validate", "storage_uri": "--storage-uri",
    "model_format": "--model-format", "cpu": "--cpu", "memory": "--memory", "gpus": "--gpus",
    "layout": "--layout", "preprocessing": "--preprocessing",
}


def configure_parser() -> argparse.ArgumentParser:
    from ..package import TARGETS, target_formats

    parser = argparse.ArgumentParser(
        prog="mlxport package", description="Write a deployable bundle of an exported artifact. sagemaker: "
        "model.tar.gz (extracted to /opt/ml/model), a Dockerfile whose ENTRYPOINT runs `mlxport serve` "
        "(`docker run IMAGE serve`), deploy.py (boto3). triton: a model repository <out>/<name>/config.pbtxt + "
        "<out>/<name>/<N>/model.onnx, checked with Triton's own schema; `mlxport serve <out>` serves it too. "
        "kserve: inferenceservice.yaml (Triton runtime, protocol v2) + model_repository/. edge: the .tflite or "
        ".onnx with metadata.json, SHA256SUMS and a standalone run.py. Nothing is written outside the output "
        "folder, and entries appear only when complete.")
    parser.add_argument("artifact", metavar="ARTIFACT", help="the exported model: " + "; ".join(
        f"{target}: {', '.join(target_formats(target))}" for target in TARGETS))
    parser.add_argument("-t", "--target", required=True, choices=list(TARGETS),
                        help="where the model will run")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="output folder (for triton: the model repository; created if missing)")
    parser.add_argument("--name", help="model name (default: the artifact's file stem)")
    parser.add_argument("--force", action="store_true", help="replace entries that already exist")
    sm = parser.add_argument_group("sagemaker")
    sm.add_argument("--wheel", metavar="WHL", help="an mlxport .whl to install in the image (default: "
                    "pip install mlxport[serve] at this version)")
    tr = parser.add_argument_group("triton and kserve")
    tr.add_argument("--version", type=int, help="triton: version folder to write (default 1); add a version "
                    "to an existing model with the next number")
    tr.add_argument("--max-batch-size", type=int, help="default 64 when every input and output has a dynamic "
                    "first axis, else 0; > 0 needs that batch axis")
    tr.add_argument("--max-queue-delay-us", type=int, help="dynamic batching delay in microseconds (default 2000)")
    tr.add_argument("--instances", type=int, help="model instances (instance_group count, default 1)")
    tr.add_argument("--instance-kind", choices=["cpu", "gpu"], help="triton: KIND_CPU (default) or KIND_GPU")
    tr.add_argument("--version-policy", help="triton: latest (default), latest:N, all or specific:1,3")
    tr.add_argument("--no-validate", dest="validate", action="store_const", const=False,
                    help="skip parsing config.pbtxt with Triton's schema (tritonclient)")
    ks = parser.add_argument_group("kserve")
    ks.add_argument("--storage-uri", help="where model_repository/ will be uploaded (default: the placeholder "
                    "s3://BUCKET/path)")
    ks.add_argument("--model-format", choices=["triton", "onnx"], help="modelFormat.name (default triton)")
    ks.add_argument("--cpu", help="CPU request and limit (default 1)")
    ks.add_argument("--memory", help="memory request and limit (default from the model size, >= 2Gi)")
    ks.add_argument("--gpus", type=int, help="nvidia.com/gpu limit (default 0; > 0 runs Triton on GPU)")
    ed = parser.add_argument_group("edge")
    ed.add_argument("--layout", help="input layout to record for inputs of that rank (default NHWC for 4-D, "
                    "as MLX convolutions are channels-last)")
    ed.add_argument("--preprocessing", help="a note on how to prepare inputs, stored in metadata.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from ..package import TARGETS, build, options_of
    from . import UsageError

    given = {dest: getattr(args, dest) for dest in _TARGET_FLAGS if getattr(args, dest) is not None}
    allowed = options_of(args.target)
    wrong = [dest for dest in given if dest not in allowed]
    if wrong:
        parts = [f"{_TARGET_FLAGS[d]} is for --target {' or '.join(t for t in TARGETS if d in options_of(t))}"
                 for d in wrong]
        raise UsageError(f"{'; '.join(parts)}, not --target {args.target}", hint="Drop it, or change --target.")
    bundle = build(args.artifact, args.target, args.output, name=args.name, force=args.force, **given)
    print(f"{args.target} bundle: {bundle.path}")
    for path in bundle.files:
        print(f"  {path}")
    for note in bundle.notes:
        print(f"note: {note}")
    return 0

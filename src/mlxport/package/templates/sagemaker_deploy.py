#!/usr/bin/env python3
"""Deploy this SageMaker bundle: upload model.tar.gz to S3, create the model, endpoint config and endpoint, invoke it.

Written by ``mlxport package --target sagemaker``; needs only boto3 (``pip install boto3``) and AWS credentials
from the usual places (environment, ~/.aws, an instance role). Nothing secret is stored in this bundle.

    python deploy.py --image URI --bucket BUCKET --role ROLE_ARN [--region R] [--instance-type ml.m5.large]
    python deploy.py ... --dry-run          # print every API call instead of making it (no boto3 needed)
    python deploy.py --delete --endpoint-name NAME [--region R]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent


def load_bundle(folder: Path = HERE) -> dict[str, Any]:
    """The bundle's bundle.json (model name, signature); empty when it is missing."""
    path = folder / "bundle.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def sample_body(bundle: dict[str, Any]) -> bytes:
    """A JSON request of zeros shaped like the inputs (dynamic dims set to 1)."""

    def zeros(shape: list[Any], dtype: str) -> Any:
        if not shape:
            return False if dtype == "bool" else 0
        return [zeros(shape[1:], dtype) for _ in range(shape[0] if isinstance(shape[0], int) and shape[0] >= 0 else 1)]

    inputs = {i["name"]: zeros(i["shape"], i["dtype"]) for i in bundle["inputs"]}
    return json.dumps({"inputs": inputs}).encode()


def parse_args(argv: Sequence[str] | None = None, bundle: dict[str, Any] | None = None) -> argparse.Namespace:
    name = (bundle or {}).get("name", "model")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="AWS credentials come from boto3's "
                                     "default chain; this script never reads or writes them.")
    parser.add_argument("--image", help="the serving image in ECR (built from this folder's Dockerfile)")
    parser.add_argument("--bucket", help="S3 bucket for model.tar.gz")
    parser.add_argument("--prefix", default=f"mlxport/{name}", help="S3 key prefix (default mlxport/<name>)")
    parser.add_argument("--role", help="IAM role ARN SageMaker assumes (needs S3 read and ECR pull)")
    parser.add_argument("--region", help="AWS region (default: boto3's configured region)")
    parser.add_argument("--instance-type", default="ml.m5.large", help="endpoint instance type (default ml.m5.large)")
    parser.add_argument("--instance-count", type=int, default=1, help="endpoint instances (default 1)")
    parser.add_argument("--endpoint-name", help="endpoint name (default <name>-<timestamp>)")
    parser.add_argument("--model-data", default=str(HERE / "model.tar.gz"), help="the model archive to upload")
    parser.add_argument("--no-wait", action="store_true", help="return once the endpoint is being created")
    parser.add_argument("--no-invoke", action="store_true", help="skip the test request")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds to wait for InService (default 1800)")
    parser.add_argument("--dry-run", action="store_true", help="print the API calls as JSON; make none")
    parser.add_argument("--delete", action="store_true", help="delete --endpoint-name, its config and its model")
    args = parser.parse_args(argv)
    if args.delete:
        if not args.endpoint_name:
            parser.error("--delete needs --endpoint-name")
        return args
    missing = [f"--{k.replace('_', '-')}" for k in ("image", "bucket", "role") if not getattr(args, k)]
    if missing:
        parser.error(f"deploying needs {', '.join(missing)} (see --help); use --dry-run to only print the calls")
    if args.instance_count < 1:
        parser.error(f"--instance-count must be >= 1; got {args.instance_count}")
    if not args.endpoint_name:
        args.endpoint_name = f"{name.replace('_', '-').replace('.', '-')[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"
    return args


def plan(args: argparse.Namespace, bundle: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The (service, operation, parameters) calls that deploy or delete the endpoint, in order."""
    endpoint = args.endpoint_name
    if args.delete:
        return [("sagemaker", "describe_endpoint_config_names", {"EndpointName": endpoint}),
                ("sagemaker", "delete_endpoint", {"EndpointName": endpoint})]
    key = f"{args.prefix.strip('/')}/model.tar.gz"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("s3", "upload_file", {"Filename": args.model_data, "Bucket": args.bucket, "Key": key}),
        ("sagemaker", "create_model", {
            "ModelName": endpoint, "ExecutionRoleArn": args.role,
            "PrimaryContainer": {"Image": args.image, "ModelDataUrl": f"s3://{args.bucket}/{key}",
                                 "Environment": {"MLXPORT_HOST": "0.0.0.0"}}}),
        ("sagemaker", "create_endpoint_config", {
            "EndpointConfigName": endpoint,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": endpoint,
                                    "InitialInstanceCount": args.instance_count,
                                    "InstanceType": args.instance_type}]}),
        ("sagemaker", "create_endpoint", {"EndpointName": endpoint, "EndpointConfigName": endpoint}),
    ]
    if not args.no_wait:
        delay = 15
        calls.append(("sagemaker", "wait:endpoint_in_service", {
            "EndpointName": endpoint, "WaiterConfig": {"Delay": delay, "MaxAttempts": max(1, args.timeout // delay)}}))
        if not args.no_invoke and bundle.get("inputs"):
            calls.append(("sagemaker-runtime", "invoke_endpoint", {
                "EndpointName": endpoint, "ContentType": "application/json", "Accept": "application/json",
                "Body": sample_body(bundle)}))
    return calls


def import_boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise SystemExit("error: deploy.py needs boto3, which is not installed: pip install boto3 "
                         "(or run with --dry-run to only print the API calls)") from None
    return boto3


def run(calls: list[tuple[str, str, dict[str, Any]]], client: Callable[[str], Any],
        say: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the calls with ``client(service)``; returns the results by operation."""
    results: dict[str, Any] = {}
    for service, operation, params in calls:
        api = client(service)
        say(f"{service}.{operation} {params.get('EndpointName') or params.get('Key') or ''}".rstrip())
        if operation.startswith("wait:"):
            api.get_waiter(operation[5:]).wait(**params)
            result: Any = None
        elif operation == "describe_endpoint_config_names":
            # Deleting needs the names the endpoint points at: its config, then the config's models.
            config = api.describe_endpoint(EndpointName=params["EndpointName"])["EndpointConfigName"]
            models = [v["ModelName"] for v in api.describe_endpoint_config(EndpointConfigName=config)
                      ["ProductionVariants"]]
            result = {"config": config, "models": models}
        else:
            result = getattr(api, operation)(**params)
        if operation == "invoke_endpoint":
            result = {"ContentType": result.get("ContentType"), "Body": result["Body"].read().decode()}
            say(f"response ({result['ContentType']}): {result['Body'][:500]}")
        results[operation] = result
    if "describe_endpoint_config_names" in results:
        names = results["describe_endpoint_config_names"]
        sm = client("sagemaker")
        sm.delete_endpoint_config(EndpointConfigName=names["config"])
        for model in names["models"]:
            sm.delete_model(ModelName=model)
        say(f"deleted endpoint config {names['config']} and model(s) {', '.join(names['models'])}")
    return results


def main(argv: Sequence[str] | None = None, client: Callable[[str], Any] | None = None) -> int:
    bundle = load_bundle()
    args = parse_args(argv, bundle)
    calls = plan(args, bundle)
    if args.dry_run:
        printable = [{"service": s, "operation": o,
                      "params": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in p.items()}}
                     for s, o, p in calls]
        print(json.dumps(printable, indent=2))
        return 0
    if client is None:
        if not args.delete and not Path(args.model_data).is_file():
            raise SystemExit(f"error: no model archive at {args.model_data}")
        session = import_boto3().session.Session(region_name=args.region)
        cache: dict[str, Any] = {}

        def client(service: str) -> Any:
            if service not in cache:
                cache[service] = session.client(service)
            return cache[service]

    run(calls, client)
    if not args.delete:
        print(f"endpoint: {args.endpoint_name}  (delete it with: python deploy.py --delete --endpoint-name "
              f"{args.endpoint_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SageMaker bundles: the tarball served as the container would serve it, the Dockerfile, deploy.py."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mlxport.package import build, package

from .helpers import free_port, mlxport_cli, onnx_reference, running_server

SECRET_WORDS = re.compile(r"(secret|password|passwd|token|api[_-]?key|access[_-]?key|credential)", re.IGNORECASE)
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


@pytest.fixture(scope="module")
def bundle(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package(models / "mlp.onnx", "sagemaker", tmp_path_factory.mktemp("sm") / "dist")


def test_bundle_files_and_tarball_layout(bundle: Path, models: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == [".dockerignore", "Dockerfile", "README.md", "bundle.json",
                                                        "deploy.py", "model.tar.gz"]
    with tarfile.open(bundle / "model.tar.gz") as tar:
        members = tar.getmembers()
        # At the root (SageMaker extracts to /opt/ml/model), plain files, no owner or time leaked.
        assert sorted(m.name for m in members) == ["mlp.onnx", "mlp.onnx.mlxport.json"]
        assert all(m.isfile() and m.uid == 0 and m.uname == "" and m.mtime == 0 for m in members)
        assert tar.extractfile("mlp.onnx").read() == (models / "mlp.onnx").read_bytes()
        meta = json.load(tar.extractfile("mlp.onnx.mlxport.json"))
    assert meta["inputs"] == [{"name": "x", "shape": ["batch", 16], "dtype": "float32"}]
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["name"] == "mlp" and info["artifact"] == "mlp.onnx" and info["sha256"] == meta["sha256"]


def test_tarball_is_reproducible(models: Path, tmp_path: Path) -> None:
    a = package(models / "mlp.onnx", "sagemaker", tmp_path / "a")
    b = package(models / "mlp.onnx", "sagemaker", tmp_path / "b")
    assert (a / "model.tar.gz").read_bytes() == (b / "model.tar.gz").read_bytes()


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_static_checks(bundle: Path) -> None:
    text = (bundle / "Dockerfile").read_text()
    steps = dockerfile_instructions(text)
    assert steps[0] == ("FROM", "python:3.11-slim")
    entry = [arg for op, arg in steps if op == "ENTRYPOINT"]
    # Exec form (a JSON array), so `docker run IMAGE serve` runs `mlxport serve` and signals reach it.
    assert len(entry) == 1 and json.loads(entry[0]) == ["mlxport"]
    assert [json.loads(arg) for op, arg in steps if op == "CMD"] == [["serve"]]
    labels = dict(arg.split("=", 1) for op, arg in steps if op == "LABEL")
    assert labels == {"com.amazonaws.sagemaker.capabilities.accept-bind-to-port": "true",
                      "com.amazonaws.sagemaker.capabilities.multi-models": "true"}
    assert ("EXPOSE", "8080") in steps
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "MLXPORT_HOST=0.0.0.0" in env
    assert not [arg for op, arg in steps if op == "ARG"]
    assert not SECRET_WORDS.search(env) and not AWS_KEY_ID.search(text)
    run = " ".join(arg for op, arg in steps if op == "RUN")
    assert '"mlxport[serve]==' in run and "--no-cache-dir" in run
    assert (bundle / ".dockerignore").read_text().split() == ["*", "!wheels/"]
    for name in ("deploy.py", "README.md", "bundle.json"):
        assert not AWS_KEY_ID.search((bundle / name).read_text())


def test_wheel_goes_into_the_build_context(models: Path, tmp_path: Path) -> None:
    wheel = tmp_path / "mlxport-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK fake wheel")
    out = package(models / "mlp.onnx", "sagemaker", tmp_path / "dist", wheel=wheel)
    assert (out / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    steps = dockerfile_instructions((out / "Dockerfile").read_text())
    assert ("COPY", "wheels/ /tmp/wheels/") in steps
    assert any(op == "RUN" and f'"/tmp/wheels/{wheel.name}[serve]"' in arg for op, arg in steps)
    res = mlxport_cli("package", str(models / "mlp.onnx"), "-t", "sagemaker", "-o", str(tmp_path / "d2"),
                      "--wheel", str(tmp_path / "nope.whl"))
    assert res.returncode == 1 and "--wheel must be an existing mlxport-*.whl" in res.stderr


@pytest.mark.slow
def test_container_entry_serves_the_extracted_tarball(bundle: Path, models: Path, tmp_path: Path) -> None:
    """``mlxport serve`` with no path, as `docker run IMAGE serve` starts it, on the extracted model.tar.gz."""
    import requests

    model_dir = tmp_path / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True)
    with tarfile.open(bundle / "model.tar.gz") as tar:
        tar.extractall(model_dir, filter="data")
    port = free_port()
    env = {"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port), "MLXPORT_HOST": "127.0.0.1"}
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    want = onnx_reference(models / "mlp.onnx", {"x": x})[0]
    with running_server([], env, port, tmp_path / "server.log") as url:
        assert requests.get(f"{url}/ping", timeout=5).json() == {"status": "healthy"}
        res = requests.post(f"{url}/invocations", json={"inputs": x.tolist()}, timeout=10)
        assert res.status_code == 200 and res.headers["content-type"].startswith("application/json")
        np.testing.assert_allclose(np.array(res.json()["predictions"], dtype=np.float32), want, rtol=1e-6, atol=1e-6)
        buf = io.BytesIO()
        np.save(buf, x)
        res = requests.post(f"{url}/invocations", data=buf.getvalue(), timeout=10,
                            headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"})
        assert res.status_code == 200 and res.headers["content-type"] == "application/x-npy"
        np.testing.assert_allclose(np.load(io.BytesIO(res.content), allow_pickle=False), want, rtol=1e-6, atol=1e-6)
        models_list = requests.get(f"{url}/models", timeout=5).json()["models"]
        assert [m["modelName"] for m in models_list] == ["mlp"]
        assert requests.get(f"{url}/v2/models/mlp", timeout=5).json()["inputs"][0]["shape"] == [-1, 16]
    assert f"127.0.0.1:{port}" in (tmp_path / "server.log").read_text()


def load_deploy(bundle: Path):
    spec = importlib.util.spec_from_file_location("bundle_deploy", bundle / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BLOCK_BOTO3 = """
import sys, runpy
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('boto3', 'botocore', 'mlxport'):
            raise ImportError(f'blocked {name}')
sys.meta_path.insert(0, Block())
sys.argv = ['deploy.py', *sys.argv[1:]]
runpy.run_path('deploy.py', run_name='__main__')
"""


def test_deploy_script_without_boto3(bundle: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", BLOCK_BOTO3, *args], cwd=bundle, capture_output=True,
                              text=True, timeout=60)

    res = run("--help")
    assert res.returncode == 0 and "--bucket" in res.stdout and "--instance-type" in res.stdout
    res = run("--bucket", "b")
    assert res.returncode == 2 and "deploying needs --image, --role" in res.stderr
    res = run("--image", "img", "--bucket", "b", "--role", "arn:aws:iam::1:role/r")
    assert res.returncode == 1 and "needs boto3, which is not installed: pip install boto3" in res.stderr
    res = run("--image", "img", "--bucket", "b", "--role", "r", "--dry-run", "--endpoint-name", "ep")
    assert res.returncode == 0, res.stderr
    calls = json.loads(res.stdout)
    assert [c["operation"] for c in calls] == ["upload_file", "create_model", "create_endpoint_config",
                                               "create_endpoint", "wait:endpoint_in_service", "invoke_endpoint"]
    assert calls[1]["params"]["PrimaryContainer"]["ModelDataUrl"] == "s3://b/mlxport/mlp/model.tar.gz"
    assert json.loads(calls[-1]["params"]["Body"]) == {"inputs": {"x": [[0] * 16]}}


def test_deploy_calls_through_stubbed_boto3(bundle: Path) -> None:
    """The real boto3 clients with botocore's Stubber: every request is checked, nothing leaves the machine."""
    boto3 = pytest.importorskip("boto3")
    from botocore.response import StreamingBody
    from botocore.stub import ANY, Stubber

    deploy = load_deploy(bundle)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="us-east-1")
    clients = {s: session.client(s) for s in ("s3", "sagemaker", "sagemaker-runtime")}
    stubs = {s: Stubber(c) for s, c in clients.items()}
    role, image = "arn:aws:iam::123456789012:role/sm", "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlp:1"
    arn = "arn:aws:sagemaker:us-east-1:123456789012:{}/ep".format
    # The transfer manager adds checksum parameters that vary by botocore version: check only where it goes.
    uploads: list[dict] = []
    clients["s3"].meta.events.register("before-parameter-build.s3.PutObject",
                                       lambda params, **kw: uploads.append(dict(params)))
    stubs["s3"].add_response("put_object", {}, None)
    sm = stubs["sagemaker"]
    sm.add_response("create_model", {"ModelArn": arn("model")}, {
        "ModelName": "ep", "ExecutionRoleArn": role,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": "s3://bkt/models/mlp/model.tar.gz",
                             "Environment": {"MLXPORT_HOST": "0.0.0.0"}}})
    sm.add_response("create_endpoint_config", {"EndpointConfigArn": arn("endpoint-config")}, {
        "EndpointConfigName": "ep", "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": "ep", "InitialInstanceCount": 2,
            "InstanceType": "ml.c5.xlarge"}]})
    sm.add_response("create_endpoint", {"EndpointArn": arn("endpoint")},
                    {"EndpointName": "ep", "EndpointConfigName": "ep"})
    sm.add_response("describe_endpoint", {
        "EndpointName": "ep", "EndpointArn": arn("endpoint"), "EndpointConfigName": "ep",
        "EndpointStatus": "InService", "CreationTime": "2024-01-01", "LastModifiedTime": "2024-01-01"},
        {"EndpointName": "ep"})
    body = b'{"predictions": [[1, 2, 3, 4]]}'
    stubs["sagemaker-runtime"].add_response("invoke_endpoint", {
        "Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"}, {
        "EndpointName": "ep", "ContentType": "application/json", "Accept": "application/json", "Body": ANY})
    for stub in stubs.values():
        stub.activate()
    args = ["--image", image, "--bucket", "bkt", "--prefix", "models/mlp", "--role", role, "--endpoint-name", "ep",
            "--instance-type", "ml.c5.xlarge", "--instance-count", "2"]
    parsed = deploy.parse_args(args, deploy.load_bundle(bundle))
    from boto3.s3.transfer import TransferConfig

    # One thread, so the Stubber sees the upload on this thread.
    clients["s3"].upload_file = (lambda upload=clients["s3"].upload_file, **kw:
                                 upload(**kw, Config=TransferConfig(use_threads=False)))
    results = deploy.run(deploy.plan(parsed, deploy.load_bundle(bundle)), clients.__getitem__, say=lambda s: None)
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    assert results["invoke_endpoint"] == {"ContentType": "application/json", "Body": body.decode()}
    assert [(u["Bucket"], u["Key"]) for u in uploads] == [("bkt", "models/mlp/model.tar.gz")]


def test_runtime_packages_follow_the_format() -> None:
    from mlxport.package.sagemaker import dockerfile_text

    assert '"mlxport[serve,torch]==' in dockerfile_text(".pt2")
    assert '"ai-edge-litert"' in dockerfile_text(".tflite") and "torch" not in dockerfile_text(".tflite")


def test_core_ml_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / "m.mlpackage"
    pkg.mkdir()
    from mlxport.package import PackageError

    with pytest.raises(PackageError, match=r"--target sagemaker takes .*\.onnx.*got m\.mlpackage"):
        build(pkg, "sagemaker", tmp_path / "out")


def test_docker_build_when_a_daemon_and_network_are_there(bundle: Path, tmp_path: Path) -> None:
    """Build the image for real where Docker can; here the base image needs a daemon and the network."""
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    context = tmp_path / "ctx"
    shutil.copytree(bundle, context)
    try:
        res = subprocess.run(["docker", "build", "-q", "-t", "mlxport-package-test:latest", str(context)],
                             capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("docker build did not finish in 120 s (pulling the base image needs the network)")
    if res.returncode != 0:
        reason = (res.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"docker build was tried and could not run here: {reason[:200]}")
    inspect = subprocess.run(["docker", "image", "inspect", "mlxport-package-test:latest"], capture_output=True,
                             text=True, timeout=60)
    config = json.loads(inspect.stdout)[0]["Config"]
    assert config["Entrypoint"] == ["mlxport"] and config["Cmd"] == ["serve"]
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"


def test_deploy_delete_through_stubbed_boto3(bundle: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    from botocore.stub import Stubber

    deploy = load_deploy(bundle)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="eu-west-1")
    sm = session.client("sagemaker")
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:{}/ep".format
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", {
            "EndpointName": "ep", "EndpointArn": arn("endpoint"), "EndpointConfigName": "ep-config",
            "EndpointStatus": "InService", "CreationTime": "2024-01-01", "LastModifiedTime": "2024-01-01"},
            {"EndpointName": "ep"})
        stub.add_response("describe_endpoint_config", {
            "EndpointConfigName": "ep-config", "EndpointConfigArn": arn("endpoint-config"), "CreationTime": "2024-01-01",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "ep-model"}]},
            {"EndpointConfigName": "ep-config"})
        stub.add_response("delete_endpoint", {}, {"EndpointName": "ep"})
        stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "ep-config"})
        stub.add_response("delete_model", {}, {"ModelName": "ep-model"})
        args = deploy.parse_args(["--delete", "--endpoint-name", "ep"], deploy.load_bundle(bundle))
        said: list[str] = []
        deploy.run(deploy.plan(args, {}), lambda service: sm, say=said.append)
        stub.assert_no_pending_responses()
    assert said[-1] == "deleted endpoint config ep-config and model(s) ep-model"

"""Bad input on a real server: the right 4xx with {"error": ...}, no traceback, and the server keeps serving."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import pytest

requests = pytest.importorskip("requests")

from .conftest import (  # noqa: E402
    Models, Server, ServerPool, assert_error, v2_binary_body, v2_decode_binary, v2_tensor)

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def strict(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a bearer token and a 64 KiB body limit."""
    pool = ServerPool(tmp_path_factory.mktemp("strict_logs"))
    try:
        yield pool.start([str(models.repo), "--max-body-size", "64KiB", "--poll-interval", "0"], token=TOKEN)
    finally:
        pool.close()


def _mlp_ok(server: Server, models: Models, headers: dict[str, str] | None = None) -> None:
    x = np.random.default_rng(21).standard_normal((2, 784)).astype(np.float32)
    (want,) = models.session("mlp").run(None, {"x": x})
    r = server.post("/v2/models/mlp/infer", json={"inputs": [v2_tensor("x", x)]}, headers=headers or {})
    assert r.status_code == 200, r.text[:300]
    np.testing.assert_allclose(v2_decode_binary(r)["output"], want, rtol=1e-5, atol=1e-6)


def test_bearer_token(strict: Server, models: Models) -> None:
    x = [[0.0] * 784]
    assert_error(strict.post("/models/mlp/invoke", json={"inputs": x}), 401, "bearer")
    r = strict.post("/models/mlp/invoke", json={"inputs": x}, headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401)
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert_error(strict.post("/models/mlp/invoke", json={"inputs": x}, headers={"Authorization": TOKEN}), 401)
    assert_error(strict.get("/v2/models/mlp"), 401)
    assert_error(strict.post("/v2/repository/index"), 401)
    assert_error(strict.get("/models"), 401)
    # Probes, scrapers and the spec stay open.
    for path in ("/ping", "/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json"):
        assert strict.get(path).status_code == 200, path
    assert strict.post("/models/mlp/invoke", json={"inputs": x}, headers=AUTH).status_code == 200
    _mlp_ok(strict, models, AUTH)


def test_body_over_limit_is_413(strict: Server, models: Models) -> None:
    big = np.zeros((40, 784), np.float32)  # 125 KB as .npy, more as JSON
    buf = io.BytesIO()
    np.save(buf, big)
    r = strict.post("/models/mlp/invoke", data=buf.getvalue(), headers={**AUTH, "Content-Type": "application/x-npy"})
    assert_error(r, 413, "--max-body-size")
    assert_error(strict.post("/v2/models/mlp/infer", json={"inputs": [v2_tensor("x", big)]}, headers=AUTH), 413)

    # Chunked upload with no Content-Length: counted while streaming.
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"0" * 8192

    assert_error(strict.post("/models/mlp/invoke", data=chunks(), headers={**AUTH, "Content-Type": "application/json"}),
                 413)
    # Just under the limit is fine.
    small = np.zeros((20, 784), np.float32)
    r = strict.post("/models/mlp/invoke", data=small.tobytes(),
                    headers={**AUTH, "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text[:300]
    _mlp_ok(strict, models, AUTH)


BAD_SAGEMAKER = [
    ("malformed JSON", "mlp", b'{"inputs": [[1, 2', "application/json", "malformed JSON"),
    ("not UTF-8", "mlp", b"\xff\xfe\x00garbage", "application/json", ""),
    ("wrong input name", "mlp", json.dumps({"inputs": {"y": [[0.0] * 784]}}).encode(), "application/json", "'x'"),
    ("wrong width", "mlp", json.dumps({"inputs": [[0.0] * 783]}).encode(), "application/json", "784"),
    ("wrong rank", "mlp", json.dumps({"inputs": [0.0] * 784}).encode(), "application/json", "rank"),
    ("ragged rows", "mlp", json.dumps({"inputs": [[0.0] * 784, [0.0]]}).encode(), "application/json", ""),
    ("strings", "mlp", json.dumps({"inputs": [["a"] * 784]}).encode(), "application/json", ""),
    ("float into int64", "failing", json.dumps({"inputs": [0.5, 1.0]}).encode(), "application/json", "int64"),
    ("octet not whole rows", "mlp", b"\x00" * 100, "application/octet-stream", "row"),
    ("npy truncated", "mlp", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 784), }"
     + b" " * 51 + b"\n" + b"\x00" * 16, "application/x-npy", "bytes"),
    ("npy garbage", "mlp", b"definitely not npy", "application/x-npy", "npy"),
    ("npz garbage", "mlp", b"PK\x03\x04 broken zip", "application/x-npz", "npz"),
    ("extra keys", "mlp", json.dumps({"inputs": [[0.0] * 784], "x": 1}).encode(), "application/json", "unexpected"),
]


@pytest.mark.parametrize("label,model,body,ctype,fragment", BAD_SAGEMAKER, ids=[c[0] for c in BAD_SAGEMAKER])
def test_bad_sagemaker_bodies_are_400(strict: Server, label: str, model: str, body: bytes, ctype: str,
                                      fragment: str) -> None:
    r = strict.post(f"/models/{model}/invoke", data=body, headers={**AUTH, "Content-Type": ctype})
    assert_error(r, 400, *([fragment] if fragment else []))


def test_pickled_npy_is_refused(strict: Server) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = strict.post("/models/mlp/invoke", data=buf.getvalue(), headers={**AUTH, "Content-Type": "application/x-npy"})
    assert_error(r, 400, "pickl")


def _v2(server: Server, body: object, headers: dict[str, str] | None = None, model: str = "mlp") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return server.post(f"/v2/models/{model}/infer", data=data, headers={**AUTH, **(headers or {})})


def test_bad_v2_requests_are_400(strict: Server, models: Models) -> None:
    x = np.zeros((2, 784), np.float32)
    good = v2_tensor("x", x)
    assert_error(_v2(strict, b'{"inputs": ['), 400, "malformed JSON")
    assert_error(_v2(strict, {"inputs": []}), 400, "inputs")
    assert_error(_v2(strict, [1, 2]), 400, "object")
    assert_error(_v2(strict, {"inputs": [{**good, "name": "y"}]}), 400, "unknown input 'y'")
    assert_error(_v2(strict, {"inputs": [good, good]}), 400, "twice")
    assert_error(_v2(strict, {"inputs": [{**good, "shape": [2, 783]}]}), 400, "elements")
    assert_error(_v2(strict, {"inputs": [{**v2_tensor("x", np.zeros((2, 783), np.float32))}]}), 400, "784")
    assert_error(_v2(strict, {"inputs": [{**good, "shape": [-1, 784]}]}), 400, "shape")
    assert_error(_v2(strict, {"inputs": [{**good, "datatype": "INT32"}]}), 400, "FP32")
    assert_error(_v2(strict, {"inputs": [{**good, "datatype": "FLOAT"}]}), 400, "datatype")
    assert_error(_v2(strict, {"inputs": [{k: v for k, v in good.items() if k != "data"}]}), 400, "data")
    assert_error(_v2(strict, {"inputs": [good], "outputs": [{"name": "nope"}]}), 400, "nope")
    assert_error(_v2(strict, {"inputs": [good], "id": 5}), 400, "id")
    assert_error(_v2(strict, {"inputs": [{"name": "idx", "shape": [2], "datatype": "INT64", "data": [0.5, 1]}]},
                     model="failing"), 400, "int64")

    # Binary extension: sizes that do not add up.
    body, headers = v2_binary_body({"x": x})
    assert_error(_v2(strict, body[:-4], headers), 400)  # truncated binary section
    assert_error(_v2(strict, body + b"\x00" * 4, headers), 400, "binary section")
    assert_error(_v2(strict, body, {**headers, "Inference-Header-Content-Length": str(len(body) + 10)}), 400,
                 "Inference-Header-Content-Length")
    assert_error(_v2(strict, body, {**headers, "Inference-Header-Content-Length": "abc"}), 400, "number")
    assert_error(_v2(strict, body, {"Content-Type": "application/octet-stream"}), 400)  # header missing
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 784], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 12}}]}).encode()
    assert_error(_v2(strict, head + b"\x00" * 12, {"Inference-Header-Content-Length": str(len(head))}), 400,
                 "binary_data_size")
    _mlp_ok(strict, models, AUTH)


def test_unknown_model_version_route(strict: Server, models: Models) -> None:
    x = v2_tensor("x", np.zeros((1, 784), np.float32))
    assert_error(strict.post("/v2/models/nope/infer", json={"inputs": [x]}, headers=AUTH), 404, "nope")
    assert_error(strict.post("/v2/models/mlp/versions/3/infer", json={"inputs": [x]}, headers=AUTH), 404, "version 3")
    assert_error(strict.post("/v2/models/mlp/versions/abc/infer", json={"inputs": [x]}, headers=AUTH), 400, "number")
    assert_error(strict.post("/models/nope/invoke", json={"inputs": [[0.0]]}, headers=AUTH), 404, "nope")
    # Names that could walk the disk never match: a decoded slash finds no route, a leading dot is refused.
    assert_error(strict.post("/v2/models/..%2F..%2Fetc/infer", json={"inputs": [x]}, headers=AUTH), 404)
    assert_error(strict.post("/v2/models/..etc/infer", json={"inputs": [x]}, headers=AUTH), 400, "must match")
    r = strict.get("/no/such/route", headers=AUTH)
    assert_error(r, 404, "no route")
    assert_error(strict.get("/v2/models/mlp/infer", headers=AUTH), 405, "GET")
    assert_error(strict.delete("/ping"), 405)
    _mlp_ok(strict, models, AUTH)


def test_failing_model_is_500_and_server_keeps_serving(shared_server: Server, models: Models) -> None:
    r = shared_server.post("/models/failing/invoke", json={"inputs": [0, 7]})
    body = assert_error(r, 500, "failing")
    assert "Gather" in body["error"] or "indices" in body["error"].lower() or "out of" in body["error"].lower()
    r = shared_server.post("/models/failing/invoke", json={"inputs": [3, 0, 1]})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["predictions"] == [40.0, 10.0, 20.0]

    # One bad request merged into a batch with good ones fails alone.
    def call(i: int) -> tuple[int, object]:
        idx = [9] if i == 5 else [i % 4, (i + 1) % 4]
        resp = requests.post(shared_server.url + "/v2/models/failing/infer", timeout=30,
                             json={"inputs": [{"name": "idx", "shape": [len(idx)], "datatype": "INT64", "data": idx}]})
        return resp.status_code, (resp.json()["outputs"][0]["data"] if resp.status_code == 200 else resp.json())

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(12)))
    table = [10.0, 20.0, 30.0, 40.0]
    for i, (status, data) in enumerate(results):
        if i == 5:
            assert status == 500 and "error" in data, data
        else:
            assert status == 200, data
            assert data == [table[i % 4], table[(i + 1) % 4]]
    _mlp_ok(shared_server, models)
    assert shared_server.get("/ping").status_code == 200


def test_no_traceback_in_logs_for_client_errors(strict: Server) -> None:
    """Client errors are access-log lines, not stack traces (the log is the operator's view)."""
    assert_error(_v2(strict, b"{oops"), 400)
    log = strict.log()
    assert "Traceback" not in log, log[-3000:]

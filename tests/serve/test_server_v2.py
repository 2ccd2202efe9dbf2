"""Open Inference Protocol v2 on a real server: health, metadata, infer (JSON and binary), repository control."""

from __future__ import annotations

import json

import numpy as np

from mlxport import __version__

from .conftest import Models, Server, assert_error, v2_binary_body, v2_decode_binary, v2_tensor

RTOL, ATOL = 1e-5, 1e-6


def test_health_and_server_metadata(shared_server: Server) -> None:
    assert shared_server.get("/v2/health/live").json() == {"live": True}
    r = shared_server.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}
    meta = shared_server.get("/v2").json()
    assert meta["name"] == "mlxport" and meta["version"] == __version__
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])


def test_model_metadata_has_dynamic_dims(shared_server: Server) -> None:
    meta = shared_server.get("/v2/models/mlp").json()
    assert meta["name"] == "mlp" and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 784]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    cnn = shared_server.get("/v2/models/cnn/versions/1").json()
    assert cnn["inputs"][0]["shape"] == [-1, 16, 16, 3]
    fixed = shared_server.get("/v2/models/fixed").json()
    assert fixed["inputs"][0]["shape"] == [2, 16] and fixed["parameters"]["max_batch_size"] == 0
    scale = shared_server.get("/v2/models/scale").json()
    assert scale["versions"] == ["1", "2"] and scale["parameters"]["version"] == "2"
    assert shared_server.get("/v2/models/scale/versions/1").json()["parameters"]["version"] == "1"
    assert_error(shared_server.get("/v2/models/scale/versions/9"), 404, "version 9")
    assert_error(shared_server.get("/v2/models/nope"), 404, "nope")


def test_model_ready(shared_server: Server) -> None:
    r = shared_server.get("/v2/models/mlp/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    r = shared_server.get("/v2/models/scale/versions/1/ready")
    assert r.status_code == 200 and r.json() == {"name": "scale", "version": "1", "ready": True}
    assert_error(shared_server.get("/v2/models/scale/versions/7/ready"), 404)
    assert_error(shared_server.get("/v2/models/nope/ready"), 404)


def test_infer_json(shared_server: Server, models: Models) -> None:
    x = np.random.default_rng(11).standard_normal((4, 784)).astype(np.float32)
    (want,) = models.session("mlp").run(None, {"x": x})
    r = shared_server.post("/v2/models/mlp/infer", json={"id": "req-1", "inputs": [v2_tensor("x", x)]})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert doc["model_name"] == "mlp" and doc["model_version"] == "1" and doc["id"] == "req-1"
    (out,) = doc["outputs"]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [4, 10]
    np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(4, 10), want, rtol=RTOL, atol=ATOL)
    # Nested data is accepted too (row-major), and a versioned route answers with that version.
    body = {"inputs": [{"name": "x", "shape": [4, 784], "datatype": "FP32", "data": x.tolist()}]}
    r = shared_server.post("/v2/models/mlp/versions/1/infer", json=body)
    np.testing.assert_allclose(v2_decode_binary(r)["output"], want, rtol=RTOL, atol=ATOL)


def test_infer_two_inputs_pick_output(shared_server: Server, models: Models) -> None:
    rng = np.random.default_rng(12)
    a, b = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    want_sum, want_prod = models.session("two_in").run(None, {"a": a, "b": b})
    # Inputs in any order; only the requested output comes back.
    body = {"inputs": [v2_tensor("b", b), v2_tensor("a", a)], "outputs": [{"name": "prod"}]}
    r = shared_server.post("/v2/models/two_in/infer", json=body)
    assert r.status_code == 200, r.text[:300]
    outs = v2_decode_binary(r)
    assert list(outs) == ["prod"]
    np.testing.assert_allclose(outs["prod"], want_prod, rtol=RTOL, atol=ATOL)
    r = shared_server.post("/v2/models/two_in/infer", json={"inputs": [v2_tensor("a", a), v2_tensor("b", b)]})
    outs = v2_decode_binary(r)
    np.testing.assert_allclose(outs["sum"], want_sum, rtol=RTOL, atol=ATOL)


def test_infer_binary_in_and_out(shared_server: Server, models: Models) -> None:
    x = np.random.default_rng(13).standard_normal((6, 16, 16, 3)).astype(np.float32)
    (want,) = models.session("cnn").run(None, {"x": x})
    body, headers = v2_binary_body({"x": x}, {"outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    r = shared_server.post("/v2/models/cnn/infer", data=body, headers=headers)
    assert r.status_code == 200, r.text[:300]
    head_len = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:head_len])
    (out,) = head["outputs"]
    assert out["parameters"]["binary_data_size"] == want.nbytes and "data" not in out
    assert len(r.content) == head_len + want.nbytes
    np.testing.assert_allclose(v2_decode_binary(r)["output"], want, rtol=1e-4, atol=1e-5)
    # Request-level binary_data_output; binary input with JSON output; two binary inputs.
    body, headers = v2_binary_body({"x": x}, {"parameters": {"binary_data_output": True}})
    r = shared_server.post("/v2/models/cnn/infer", data=body, headers=headers)
    assert "inference-header-content-length" in r.headers
    np.testing.assert_allclose(v2_decode_binary(r)["output"], want, rtol=1e-4, atol=1e-5)
    body, headers = v2_binary_body({"x": x})
    r = shared_server.post("/v2/models/cnn/infer", data=body, headers=headers)
    assert "inference-header-content-length" not in r.headers
    np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(6, 10), want, rtol=1e-4, atol=1e-5)
    rng = np.random.default_rng(14)
    a, b = (rng.standard_normal((3, 3)).astype(np.float32) for _ in range(2))
    want_sum, want_prod = models.session("two_in").run(None, {"a": a, "b": b})
    body, headers = v2_binary_body({"a": a, "b": b}, {"parameters": {"binary_data_output": True}})
    outs = v2_decode_binary(shared_server.post("/v2/models/two_in/infer", data=body, headers=headers))
    np.testing.assert_allclose(outs["sum"], want_sum, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(outs["prod"], want_prod, rtol=RTOL, atol=ATOL)


def test_infer_versions(shared_server: Server) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for route, version in (("/v2/models/scale/infer", 2), ("/v2/models/scale/versions/1/infer", 1),
                           ("/v2/models/scale/versions/2/infer", 2)):
        r = shared_server.post(route, json={"inputs": [v2_tensor("x", x)]})
        assert r.status_code == 200, r.text[:300]
        assert r.json()["model_version"] == str(version)
        np.testing.assert_allclose(v2_decode_binary(r)["output"], x * version + version)
    assert_error(shared_server.post("/v2/models/scale/versions/5/infer", json={"inputs": [v2_tensor("x", x)]}),
                 404, "version 5")


def test_repository_index_load_unload_rollback(shared_server: Server) -> None:
    index = shared_server.post("/v2/repository/index").json()
    rows = {(r["name"], r["version"]): r for r in index}
    assert rows[("mlp", "1")]["state"] == "READY"
    assert rows[("scale", "2")]["reason"] == "default"
    x = np.ones((1, 4), np.float32)
    infer = lambda: shared_server.post("/v2/models/scale/infer", json={"inputs": [v2_tensor("x", x)]})  # noqa: E731

    try:
        # Pin version 1 as the default, then roll back to 2.
        r = shared_server.post("/v2/repository/models/scale/load", json={"parameters": {"version": "1"}})
        assert r.status_code == 200 and r.json()["version"] == "1", r.text[:300]
        assert infer().json()["model_version"] == "1"
        r = shared_server.post("/v2/repository/models/scale/rollback")
        assert r.status_code == 200 and r.json()["version"] == "2", r.text[:300]
        assert infer().json()["model_version"] == "2"
        np.testing.assert_allclose(v2_decode_binary(infer())["output"], x * 2 + 2)

        # Unload: 404 on infer, not ready, still in the index as UNAVAILABLE; /ping ignores unloaded models.
        r = shared_server.post("/v2/repository/models/scale/unload")
        assert r.status_code == 200 and r.json()["state"] == "UNAVAILABLE"
        assert_error(infer(), 404, "unloaded")
        assert shared_server.get("/v2/models/scale/ready").status_code in (404, 503)
        states = {r["state"] for r in shared_server.post("/v2/repository/index").json() if r["name"] == "scale"}
        assert states == {"UNAVAILABLE"}
        assert shared_server.get("/ping").status_code == 200
        assert_error(shared_server.post("/v2/repository/models/scale/rollback"), 400, "no previous version")
    finally:
        r = shared_server.post("/v2/repository/models/scale/load")
    assert r.status_code == 200 and r.json() == {"name": "scale", "version": "2", "state": "READY"}, r.text[:300]
    assert infer().json()["model_version"] == "2"
    assert shared_server.get("/v2/models/scale").json()["versions"] == ["1", "2"]

    assert_error(shared_server.post("/v2/repository/models/nope/load"), 404, "nope")
    assert_error(shared_server.post("/v2/repository/models/scale/load", json={"parameters": {"version": "9"}}),
                 404, "version 9")
    assert_error(shared_server.post("/v2/repository/models/scale/load", json={"parameters": {"version": "x/.."}}),
                 400)
    assert_error(shared_server.post("/v2/repository/models/scale/load", json={"parameters": "1"}), 400,
                 "parameters")
    assert_error(shared_server.post("/v2/repository/models/scale/load", data=b"[1,", ), 400, "JSON")

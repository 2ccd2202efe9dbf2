"""SageMaker endpoints on a real server: /ping, /invocations in every content type, Accept, multi-model API."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from .conftest import Models, Server, assert_error

RTOL, ATOL = 1e-5, 1e-6


def _ref(models: Models, name: str, **feed: np.ndarray) -> list[np.ndarray]:
    return models.session(name).run(None, feed)


def _mlp_input(rows: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 784)).astype(np.float32)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_ping_healthy(shared_server: Server) -> None:
    r = shared_server.get("/ping")
    assert r.status_code == 200
    assert r.json() == {"status": "healthy"}


@pytest.mark.parametrize("shape", ["inputs_by_name", "inputs_list", "instances", "bare_list", "by_name"])
def test_invoke_json_bodies(shared_server: Server, models: Models, shape: str) -> None:
    x = _mlp_input()
    body = {"inputs_by_name": {"inputs": {"x": x.tolist()}}, "inputs_list": {"inputs": x.tolist()},
            "instances": {"instances": x.tolist()}, "bare_list": x.tolist(), "by_name": {"x": x.tolist()}}[shape]
    r = shared_server.post("/models/mlp/invoke", json=body)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    (want,) = _ref(models, "mlp", x=x)
    got = np.asarray(doc["outputs"]["output"], np.float32)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(doc["predictions"], np.float32), want, rtol=RTOL, atol=ATOL)


def test_invoke_npy_npz_octet_bodies(shared_server: Server, models: Models) -> None:
    x = _mlp_input(5, seed=2)
    (want,) = _ref(models, "mlp", x=x)
    cases = [("application/x-npy", _npy(x)), ("application/x-npz", _npz(x=x)),
             ("application/octet-stream", x.astype("<f4").tobytes()),
             ("application/x-npy; charset=binary", _npy(x))]
    for ctype, data in cases:
        r = shared_server.post("/models/mlp/invoke", data=data, headers={"Content-Type": ctype,
                                                                          "Accept": "application/x-npy"})
        assert r.status_code == 200, (ctype, r.text[:300])
        assert r.headers["content-type"] == "application/x-npy"
        got = np.load(io.BytesIO(r.content), allow_pickle=False)
        assert got.dtype == np.float32 and got.shape == want.shape, ctype
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=ctype)


def test_accept_is_honoured(shared_server: Server, models: Models) -> None:
    x = _mlp_input(2, seed=3)
    (want,) = _ref(models, "mlp", x=x)
    post = lambda accept: shared_server.post("/models/mlp/invoke", data=_npy(x),  # noqa: E731
                                             headers={"Content-Type": "application/x-npy", "Accept": accept})
    r = post("application/octet-stream")
    assert r.headers["content-type"] == "application/octet-stream"
    np.testing.assert_allclose(np.frombuffer(r.content, "<f4").reshape(want.shape), want, rtol=RTOL, atol=ATOL)
    r = post("application/x-npz")
    assert r.headers["content-type"] == "application/x-npz"
    with np.load(io.BytesIO(r.content), allow_pickle=False) as z:
        np.testing.assert_allclose(z["output"], want, rtol=RTOL, atol=ATOL)
    # q-values: the highest acceptable wins, whatever the order.
    r = post("application/json;q=0.5, application/x-npy;q=0.9")
    assert r.headers["content-type"] == "application/x-npy"
    r = post("*/*")
    assert r.headers["content-type"].startswith("application/json")
    assert_error(post("text/csv"), 406, "text/csv")
    assert_error(shared_server.post("/models/mlp/invoke", data=b"x,y", headers={"Content-Type": "text/csv"}),
                 415, "text/csv")


def test_two_inputs_two_outputs(shared_server: Server, models: Models) -> None:
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    want_sum, want_prod = _ref(models, "two_in", a=a, b=b)
    r = shared_server.post("/models/two_in/invoke", json={"inputs": {"a": a.tolist(), "b": b.tolist()}})
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert "predictions" not in doc  # only for single-output models
    np.testing.assert_allclose(doc["outputs"]["sum"], want_sum, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(doc["outputs"]["prod"], want_prod, rtol=RTOL, atol=ATOL)
    # Rows given as objects (TF-Serving "instances"), answered as .npz.
    rows = [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(4)]
    r = shared_server.post("/models/two_in/invoke", json={"instances": rows}, headers={"Accept": "application/x-npz"})
    assert r.status_code == 200, r.text[:300]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["prod.npy", "sum.npy"]
    with np.load(io.BytesIO(r.content), allow_pickle=False) as z:
        np.testing.assert_allclose(z["sum"], want_sum, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(z["prod"], want_prod, rtol=RTOL, atol=ATOL)
    r = shared_server.post("/models/two_in/invoke", data=_npz(a=a, b=b), headers={"Content-Type": "application/x-npz"})
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["outputs"]["prod"], want_prod, rtol=RTOL, atol=ATOL)
    # A .npy holds one array: a two-input model says so.
    assert_error(shared_server.post("/models/two_in/invoke", data=_npy(a),
                                    headers={"Content-Type": "application/x-npy"}), 400, "2 inputs")
    # Two outputs cannot be one .npy.
    assert_error(shared_server.post("/models/two_in/invoke", data=_npz(a=a, b=b),
                                    headers={"Content-Type": "application/x-npz", "Accept": "application/x-npy"}), 406)


def test_cnn_nhwc(shared_server: Server, models: Models) -> None:
    x = np.random.default_rng(5).standard_normal((3, 16, 16, 3)).astype(np.float32)
    (want,) = _ref(models, "cnn", x=x)
    r = shared_server.post("/models/cnn/invoke", data=x.tobytes(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text[:300]
    got = np.asarray(r.json()["predictions"], np.float32)
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_invocations_target_model_header(shared_server: Server, models: Models) -> None:
    x = _mlp_input(1, seed=6)
    (want,) = _ref(models, "mlp", x=x)
    for target in ("mlp", "mlp.tar.gz", "some/prefix/mlp.tar.gz"):
        r = shared_server.post("/invocations", json={"inputs": x.tolist()},
                               headers={"X-Amzn-SageMaker-Target-Model": target})
        assert r.status_code == 200, (target, r.text[:300])
        np.testing.assert_allclose(r.json()["predictions"], want, rtol=RTOL, atol=ATOL)
    # Several models and no header: the error says how to name one.
    assert_error(shared_server.post("/invocations", json={"inputs": x.tolist()}), 400,
                 "X-Amzn-SageMaker-Target-Model")
    assert_error(shared_server.post("/invocations", json={"inputs": x.tolist()},
                                    headers={"X-Amzn-SageMaker-Target-Model": "nope"}), 404, "nope")


def test_invocations_single_model(serve, models: Models) -> None:
    """With one model, /invocations needs no header (a SageMaker single-model container)."""
    server = serve([str(models.files["mlp"]), "--poll-interval", "0"])
    x = _mlp_input(2, seed=7)
    (want,) = _ref(models, "mlp", x=x)
    r = server.post("/invocations", data=_npy(x), headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 200, r.text[:300]
    np.testing.assert_allclose(r.json()["predictions"], want, rtol=RTOL, atol=ATOL)
    assert server.get("/models").json()["models"][0]["modelName"] == "mlp"


def test_multi_model_api(shared_server: Server, models: Models) -> None:
    listed = shared_server.get("/models").json()["models"]
    names = {m["modelName"] for m in listed}
    assert {"mlp", "cnn", "two_in", "fixed", "scale"} <= names
    assert all(m["modelUrl"] for m in listed)
    d = shared_server.get("/models/mlp")
    assert d.status_code == 200 and d.json()["modelName"] == "mlp"
    assert_error(shared_server.get("/models/missing"), 404, "missing")

    loadable = shared_server.loadable
    r = shared_server.post("/models", json={"model_name": "extra", "url": str(loadable / "extra.onnx")})
    assert r.status_code == 200, r.text[:300]
    try:
        assert "extra" in {m["modelName"] for m in shared_server.get("/models").json()["models"]}
        x = _mlp_input(2, seed=8)
        (want,) = _ref(models, "mlp", x=x)
        r = shared_server.post("/models/extra/invoke", json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text[:300]
        np.testing.assert_allclose(r.json()["predictions"], want, rtol=RTOL, atol=ATOL)
        # The same name twice: 409.
        assert_error(shared_server.post("/models", json={"model_name": "extra", "url": str(loadable / "extra.onnx")}),
                     409, "extra")
    finally:
        r = shared_server.delete("/models/extra")
    assert r.status_code == 200, r.text[:300]
    assert "extra" not in {m["modelName"] for m in shared_server.get("/models").json()["models"]}
    assert_error(shared_server.post("/models/extra/invoke", json={"inputs": [[0.0] * 784]}), 404)
    assert_error(shared_server.delete("/models/extra"), 404)


def test_add_model_outside_roots_is_forbidden(shared_server: Server, models: Models, tmp_path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(models.files["mlp"].read_bytes())
    loadable = shared_server.loadable
    for url in (str(outside), f"file://{outside}", str(loadable / ".." / ".." / "elsewhere.onnx"), "/etc/passwd"):
        assert_error(shared_server.post("/models", json={"model_name": "evil", "url": url}), 403, "--load-root")
    assert "evil" not in {m["modelName"] for m in shared_server.get("/models").json()["models"]}
    # Names with slashes or leading dots never reach the disk.
    for name in ("../x", ".hidden", "a/b"):
        r = shared_server.post("/models", json={"model_name": name, "url": str(loadable / "extra.onnx")})
        assert_error(r, 400, "model_name")
    assert_error(shared_server.post("/models", json={"model_name": "x"}), 400, "url")
    assert_error(shared_server.post("/models", data=b"{nope", headers={"Content-Type": "application/json"}), 400,
                 "JSON")


def test_add_versioned_folder_and_bad_artifact(shared_server: Server, models: Models) -> None:
    """POST /models with a folder of numbered versions loads the newest; a broken file is a 4xx, not a crash."""
    loadable = shared_server.loadable
    models.version_dir(loadable, "vers", 1, "scale1")
    models.version_dir(loadable, "vers", 3, "scale3")
    r = shared_server.post("/models", json={"model_name": "vers", "url": str(loadable / "vers")})
    try:
        assert r.status_code == 200, r.text[:300]
        x = np.ones((1, 4), np.float32)
        out = shared_server.post("/models/vers/invoke", json={"inputs": x.tolist()}).json()["predictions"]
        np.testing.assert_allclose(out, x * 3 + 3)
    finally:
        shared_server.delete("/models/vers")
    (loadable / "broken.onnx").write_bytes(b"not an onnx file")
    r = shared_server.post("/models", json={"model_name": "broken", "url": str(loadable / "broken.onnx")})
    assert_error(r, 400, "broken")
    assert "broken" not in {m["modelName"] for m in shared_server.get("/models").json()["models"]}
    assert shared_server.get("/ping").status_code == 200
    assert json.loads(shared_server.get("/ping").text) == {"status": "healthy"}

"""Unit tests for serve.codec: SageMaker and Open Inference Protocol bodies <-> named numpy tensors (no server)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from mlxport.runners import IOSpec
from mlxport.serve import codec
from mlxport.serve.codec import (
    V2_DATATYPES,
    V2Request,
    check_feed,
    decode_sagemaker,
    decode_v2,
    encode_sagemaker,
    encode_v2,
    v2_datatype,
)
from mlxport.serve.errors import InvalidInput, NotAcceptable, ServeError, UnsupportedMediaType

DTYPES = ["float32", "float16", "int32", "int64", "bool", "bfloat16"]
MLP = [IOSpec("x", [None, 784], "float32")]
TWO = [IOSpec("x", ["batch", 3], "float32"), IOSpec("mask", ["batch", 3], "bool")]
OUTS = [IOSpec("logits", [None, 10], "float32"), IOSpec("ids", [None], "int64")]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, params=["orjson", "stdlib"])
def json_backend(request, monkeypatch) -> str:
    """Run every test with the fast parser (when installed) and with the stdlib fallback."""
    if request.param == "stdlib":
        monkeypatch.setattr(codec, "_orjson", None)
    elif codec._orjson is None:
        pytest.skip("orjson is not installed: the stdlib run covers the codec")
    return request.param


def _dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def _sample(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    dt = _dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        return rng.integers(-1000, 1000, shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _spec(dtype: str) -> list[IOSpec]:
    return [IOSpec("t", ["batch", 2, 3], dtype)]


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got.astype(np.float64) if got.dtype.kind == "V" else got,
                                  want.astype(np.float64) if want.dtype.kind == "V" else want)


def _npy(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _npz(compressed: bool = False, *args, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, *args, **arrays)
    return buf.getvalue()


def v2_body(tensors, *, nested=True, outputs=None, parameters=None, req_id=None) -> tuple[bytes, int | None]:
    """Build a v2 request: tensors are (name, array, binary) in request order."""
    entries, blobs = [], []
    for name, arr, binary in tensors:
        entry = {"name": name, "shape": list(arr.shape), "datatype": v2_datatype(arr.dtype.name)}
        if binary:
            blob = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.tolist() if nested else arr.ravel().tolist()
        entries.append(entry)
    doc: dict = {"inputs": entries}
    if req_id is not None:
        doc["id"] = req_id
    if outputs is not None:
        doc["outputs"] = outputs
    if parameters is not None:
        doc["parameters"] = parameters
    head = json.dumps(doc).encode()
    return head + b"".join(blobs), (len(head) if blobs else None)


def parse_v2_response(body: bytes, headers: dict[str, str]) -> tuple[dict, dict[str, np.ndarray], set[str]]:
    """Independent reader of a v2 response: (header doc, name -> array, names sent as binary)."""
    hl = int(headers.get("Inference-Header-Content-Length", len(body)))
    doc = json.loads(body[:hl])
    offset, arrays, binary = hl, {}, set()
    for out in doc["outputs"]:
        dt = _dtype(V2_DATATYPES[out["datatype"]])
        if "parameters" in out:
            size = out["parameters"]["binary_data_size"]
            arrays[out["name"]] = np.frombuffer(body, dt, size // dt.itemsize, offset).reshape(out["shape"])
            offset += size
            binary.add(out["name"])
        else:
            assert all(not isinstance(v, list) for v in out["data"])  # flat, row-major
            arrays[out["name"]] = np.asarray(out["data"]).astype(dt).reshape(out["shape"])
    assert offset == len(body)
    return doc, arrays, binary


# ------------------------------------------------------------------------------------ datatypes


def test_v2_datatypes_map_both_ways() -> None:
    for v2, np_name in V2_DATATYPES.items():
        assert v2_datatype(np_name) == v2
    assert v2_datatype("float") == "FP64"  # numpy alias normalised
    with pytest.raises(ServeError, match="complex64.*supported: bool"):
        v2_datatype("complex64")


# ----------------------------------------------------------------------- SageMaker: requests


def test_sagemaker_json_forms_one_input(rng) -> None:
    x = _sample(rng, "float32", (2, 784))
    rows = x.tolist()
    bodies = [
        rows,
        {"inputs": rows},
        {"inputs": {"x": rows}},
        {"instances": rows},
        {"instances": [{"x": r} for r in rows]},
        {"instances": rows, "signature_name": "serving_default"},
        {"x": rows},
    ]
    for doc in bodies:
        feed = decode_sagemaker(json.dumps(doc).encode(), "application/json", MLP)
        assert list(feed) == ["x"]
        _same(feed["x"], x)


def test_sagemaker_json_forms_two_inputs(rng) -> None:
    x, mask = _sample(rng, "float32", (4, 3)), _sample(rng, "bool", (4, 3))
    bodies = [
        {"inputs": {"mask": mask.tolist(), "x": x.tolist()}},
        {"x": x.tolist(), "mask": mask.tolist()},
        {"instances": [{"x": a, "mask": b} for a, b in zip(x.tolist(), mask.tolist())]},
    ]
    for doc in bodies:
        feed = decode_sagemaker(json.dumps(doc).encode(), None, TWO)
        assert list(feed) == ["x", "mask"]  # model order, whatever the body order
        _same(feed["x"], x)
        _same(feed["mask"], mask)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sagemaker_round_trip_every_content_type(rng, dtype) -> None:
    arr = _sample(rng, dtype, (5, 2, 3))
    spec = _spec(dtype)
    bodies = {
        "application/json": json.dumps({"inputs": arr.tolist()}).encode(),
        "application/x-npy": _npy(arr),
        "application/x-npz": _npz(t=arr),
        "application/octet-stream": arr.tobytes(),
    }
    for ctype, body in bodies.items():
        feed = decode_sagemaker(body, ctype, spec)
        _same(feed["t"], arr)
        for accept in ("application/json", "application/x-npy", "application/x-npz", "application/octet-stream"):
            out, out_type = encode_sagemaker([feed["t"]], ["t"], accept)
            assert out_type == accept
            if accept == "application/json":
                doc = json.loads(out)
                assert doc["predictions"] == doc["outputs"]["t"]
                back = np.asarray(doc["outputs"]["t"]).astype(arr.dtype)
            elif accept == "application/x-npy":
                back = np.load(io.BytesIO(out), allow_pickle=False)
                back = back.view(arr.dtype) if dtype == "bfloat16" else back  # np.save writes bfloat16 as <V2
            elif accept == "application/x-npz":
                back = np.load(io.BytesIO(out), allow_pickle=False)["t"]
                back = back.view(arr.dtype) if dtype == "bfloat16" else back
            else:
                back = np.frombuffer(out, arr.dtype).reshape(arr.shape)
            _same(np.ascontiguousarray(back), arr)


def test_sagemaker_npy_layouts_and_aliases(rng) -> None:
    x = _sample(rng, "float32", (3, 784))
    _same(decode_sagemaker(_npy(np.asfortranarray(x)), "application/x-npy", MLP)["x"], x)
    _same(decode_sagemaker(_npy(x.astype(">f4")), "application/x-npy", MLP)["x"], x)  # big-endian file
    _same(decode_sagemaker(_npy(x.astype(np.float64)), "application/x-npy", MLP)["x"], x)  # safe float cast
    _same(decode_sagemaker(_npz(False, x), "application/x-npz", MLP)["x"], x)  # positional arr_0
    _same(decode_sagemaker(_npz(True, x=x), "application/x-npz", MLP)["x"], x)  # compressed


def test_sagemaker_content_type_parameters_and_default(rng) -> None:
    x = _sample(rng, "float32", (1, 784))
    body = json.dumps([x[0].tolist()]).encode()
    for ctype in (None, "", "Application/JSON; charset=utf-8", "application/json;charset=UTF-8"):
        _same(decode_sagemaker(body, ctype, MLP)["x"], x)
    raw = decode_sagemaker(x.tobytes() * 2, "application/octet-stream; foo=bar", MLP)["x"]
    assert raw.shape == (2, 784)


def test_sagemaker_json_int_data_casts_to_float_and_int32(rng) -> None:
    feed = decode_sagemaker(json.dumps([[1, 2, 3]]).encode(), None, [IOSpec("x", [None, 3], "float32")])
    _same(feed["x"], np.array([[1, 2, 3]], np.float32))
    feed = decode_sagemaker(json.dumps([[1, -2, 3]]).encode(), None, [IOSpec("x", [None, 3], "int32")])
    _same(feed["x"], np.array([[1, -2, 3]], np.int32))


# ---------------------------------------------------------------------- SageMaker: responses


def test_encode_sagemaker_json_shapes_nan_and_multi_output(rng) -> None:
    logits = np.array([[0.5, np.nan, np.inf, -np.inf]], np.float32)
    body, ctype = encode_sagemaker([logits], ["logits"], None)
    assert ctype == "application/json" and b"NaN" in body and b"-Infinity" in body and b"null" not in body
    doc = json.loads(body)
    np.testing.assert_array_equal(np.asarray(doc["predictions"], np.float32), logits)
    ids = np.arange(3, dtype=np.int64)
    body, _ = encode_sagemaker([logits, ids], ["logits", "ids"], "*/*")
    doc = json.loads(body)
    assert set(doc) == {"outputs"} and doc["outputs"]["ids"] == [0, 1, 2]
    body, ctype = encode_sagemaker([logits, ids], ["logits", "ids"], "application/x-npz")
    npz = np.load(io.BytesIO(body), allow_pickle=False)
    assert ctype == "application/x-npz" and sorted(npz.files) == ["ids", "logits"]
    _same(npz["ids"], ids)


@pytest.mark.parametrize(
    ("accept", "n_outputs", "want"),
    [
        (None, 1, "application/json"),
        ("", 1, "application/json"),
        ("*/*", 2, "application/json"),
        ("application/*", 1, "application/json"),
        ("text/csv, application/x-npy", 1, "application/x-npy"),
        ("application/x-npy;q=0.5, application/json;q=0.9", 1, "application/json"),
        ("application/json;q=0.1, application/octet-stream", 1, "application/octet-stream"),
        ("application/x-npy, application/x-npz;q=0.8", 2, "application/x-npz"),  # npy cannot hold 2
        ("application/json;q=0, */*;q=0.2", 1, "application/x-npz"),  # wildcard minus what q=0 refused
        ("APPLICATION/X-NPZ", 1, "application/x-npz"),
        ("application/x-npy;q=nan, application/json;q=0.5", 1, "application/json"),
    ],
)
def test_accept_negotiation(accept, n_outputs, want) -> None:
    arrays = [np.zeros((1, 2), np.float32)] * n_outputs
    names = [f"o{i}" for i in range(n_outputs)]
    assert encode_sagemaker(arrays, names, accept)[1] == want


@pytest.mark.parametrize(
    ("accept", "n_outputs"),
    [("text/csv", 1), ("application/x-npy", 2), ("application/octet-stream", 2), ("application/json;q=0", 1)],
)
def test_accept_unsupported(accept, n_outputs) -> None:
    with pytest.raises(NotAcceptable) as info:
        encode_sagemaker([np.zeros(2, np.float32)] * n_outputs, [f"o{i}" for i in range(n_outputs)], accept)
    msg = str(info.value)
    assert info.value.status == 406 and accept in msg and "application/json" in msg and "x-npz" in msg


# ----------------------------------------------------------------------- Open Inference Protocol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["nested", "flat", "binary"])
def test_v2_round_trip(rng, dtype, mode) -> None:
    arr = _sample(rng, dtype, (4, 2, 3))
    body, hl = v2_body([("t", arr, mode == "binary")], nested=mode == "nested", req_id="r-1")
    req = decode_v2(body, hl, _spec(dtype))
    assert req.id == "r-1" and req.outputs is None and req.parameters == {}
    _same(req.feed["t"], arr)
    for binary in (False, True):
        req.binary_outputs = {"t": binary}
        out, headers = encode_v2("m", "3", [req.feed["t"]], _spec(dtype), req)
        doc, arrays, sent_binary = parse_v2_response(out, headers)
        assert doc["model_name"] == "m" and doc["model_version"] == "3" and doc["id"] == "r-1"
        assert doc["outputs"][0]["datatype"] == v2_datatype(dtype)
        assert sent_binary == ({"t"} if binary else set())
        assert headers["Content-Type"] == ("application/octet-stream" if binary else "application/json")
        _same(np.ascontiguousarray(arrays["t"]), arr)


def test_v2_several_binary_and_mixed_inputs(rng) -> None:
    x, mask = _sample(rng, "float32", (5, 3)), _sample(rng, "bool", (5, 3))
    for tensors in (
        [("x", x, True), ("mask", mask, True)],
        [("mask", mask, True), ("x", x, True)],  # binary order follows the JSON, not the model
        [("x", x, False), ("mask", mask, True)],
        [("mask", mask, True), ("x", x, False)],
    ):
        req = decode_v2(*v2_body(tensors), TWO)
        assert list(req.feed) == ["x", "mask"]
        _same(req.feed["x"], x)
        _same(req.feed["mask"], mask)


def test_v2_binary_outputs_per_output_and_request_wide(rng) -> None:
    x = _sample(rng, "float32", (2, 784))
    logits, ids = _sample(rng, "float32", (2, 10)), np.array([7, 3], np.int64)
    cases = [
        # (request outputs, request parameters, expected output order, expected binary set)
        (None, None, ["logits", "ids"], set()),
        (None, {"binary_data_output": True}, ["logits", "ids"], {"logits", "ids"}),
        ([{"name": "ids", "parameters": {"binary_data": True}}, {"name": "logits"}], None, ["ids", "logits"], {"ids"}),
        ([{"name": "logits", "parameters": {"binary_data": False}}, {"name": "ids"}], {"binary_data_output": True},
         ["logits", "ids"], {"ids"}),
        ([{"name": "ids"}], None, ["ids"], set()),
    ]
    for outputs, params, order, binary in cases:
        for specs in (None, OUTS):  # with output specs, names are checked at decode time
            body, hl = v2_body([("x", x, True)], outputs=outputs, parameters=params)
            req = decode_v2(body, hl, MLP, output_specs=specs)
            out, headers = encode_v2("mlp", "1", [logits, ids], OUTS, req)
            doc, arrays, sent_binary = parse_v2_response(out, headers)
            assert [o["name"] for o in doc["outputs"]] == order and sent_binary == binary
            assert "id" not in doc
            _same(np.ascontiguousarray(arrays["logits"]) if "logits" in arrays else logits, logits)
            _same(np.ascontiguousarray(arrays["ids"]), ids)
            if binary:
                assert int(headers["Inference-Header-Content-Length"]) < len(out)
            else:
                assert "Inference-Header-Content-Length" not in headers


def test_v2_json_int_data_for_float_and_nan_output() -> None:
    body, _ = v2_body([("x", np.ones((1, 784), np.int64), False)])
    body = body.replace(b'"INT64"', b'"FP32"')
    req = decode_v2(body, None, MLP)
    _same(req.feed["x"], np.ones((1, 784), np.float32))
    out, headers = encode_v2("m", "1", [np.array([[np.nan, 1.0]], np.float32)], OUTS[:1], req)
    assert b"NaN" in out and np.isnan(json.loads(out)["outputs"][0]["data"][0])


def test_json_special_cases_on_both_parsers() -> None:
    """NaN tokens in, colons inside strings, duplicate keys in nested rows: same answers on both parsers."""
    spec = [IOSpec("x", [None, 3], "float32")]
    req = decode_v2(b'{"id": "req:1", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", '
                    b'"data": [NaN, Infinity, -1.5]}]}', None, spec)
    assert req.id == "req:1"
    np.testing.assert_array_equal(req.feed["x"], np.array([[np.nan, np.inf, -1.5]], np.float32))
    feed = decode_sagemaker(b'{"instances": [{"x": [1, 2, 3]}], "signature_name": "a:b"}', None, spec)
    _same(feed["x"], np.array([[1, 2, 3]], np.float32))
    with pytest.raises(InvalidInput, match="duplicate key 'x'"):
        decode_sagemaker(b'{"instances": [{"x": [1, 2, 3], "x": [4, 5, 6]}]}', None, spec)
    with pytest.raises(InvalidInput, match="duplicate key 'inputs'"):
        decode_v2(b'{"inputs": [], "inputs": []}', None, spec)
    big = decode_sagemaker(json.dumps([[2**63 - 1, 0, 1]]).encode(), None, [IOSpec("x", [None, 3], "int64")])
    assert big["x"][0, 0] == 2**63 - 1


# -------------------------------------------------------------------------------- check_feed


def test_check_feed_casts_and_contiguity() -> None:
    spec = [IOSpec("a", [3, None], "int32"), IOSpec("b", [None], "float16")]
    a = np.arange(6, dtype=np.int64).reshape(2, 3).T  # non-contiguous, safe int narrowing
    feed = check_feed({"b": np.array([1.5, 2]), "a": a}, spec)
    assert list(feed) == ["a", "b"]
    _same(feed["a"], a.astype(np.int32))
    _same(feed["b"], np.array([1.5, 2], np.float16))
    same = np.zeros((3, 1), np.int32)
    assert check_feed({"a": same, "b": np.zeros(1, np.float16)}, spec)["a"] is same  # no copy when right


# ---------------------------------------------------------------------------------- bad input


_CALLED: list[str] = []


def _mark(what: str) -> str:
    _CALLED.append(what)
    return what


class _Boom:
    """Unpickling this calls _mark: proves whether a decoder ever unpickled."""

    def __reduce__(self):
        return (_mark, ("unpickled",))


def test_pickle_probe_works() -> None:
    """The probe is real: loading the body with pickling allowed does run _mark."""
    np.load(io.BytesIO(_pickled_npy()), allow_pickle=True)
    assert _CALLED == ["unpickled"]
    _CALLED.clear()


def _pickled_npy() -> bytes:
    return _npy(np.array([_Boom(), 1], dtype=object), allow_pickle=True)


def _bad_zip_duplicate(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with pytest.warns(UserWarning), zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", _npy(x))
        zf.writestr("x.npy", _npy(x))
    return buf.getvalue()


X1 = np.zeros((1, 784), np.float32)
ROW = X1.tolist()


def _v2(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def _v2_in(**over) -> dict:
    entry = {"name": "x", "shape": [1, 784], "datatype": "FP32", "data": X1.ravel().tolist()}
    entry.update(over)
    return entry


def _binary(size_field: int, payload: bytes, **extra) -> tuple[bytes, int]:
    head = _v2({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32",
                            "parameters": {"binary_data_size": size_field}, **extra}]})
    return head + payload, len(head)


def _huge_npy_header() -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    return buf.getvalue() + b"\0" * 16


SM = decode_sagemaker
BAD = {
    # SageMaker JSON
    "malformed-json": (lambda: SM(b'{"inputs": [1, 2', None, MLP), InvalidInput, ["malformed JSON", "line 1 column"]),
    "not-utf8": (lambda: SM(b"\xff\xfe\xfa", None, MLP), InvalidInput, ["JSON"]),
    "json-scalar": (lambda: SM(b"3", None, MLP), InvalidInput, ["object or a list", "given int"]),
    "too-deep": (lambda: SM(b"[" * 100000 + b"]" * 100000, None, MLP), InvalidInput, ["nested too deeply"]),
    "wrong-name": (lambda: SM(_v2({"y": ROW}), None, MLP), InvalidInput, ["['x']", "unknown ['y']", "missing ['x']"]),
    "missing-name": (lambda: SM(_v2({"x": [[1, 2, 3]]}), None, TWO), InvalidInput, ["missing ['mask']", "given ['x']"]),
    "duplicate-key": (lambda: SM(b'{"x": [[1]], "x": [[2]]}', None, MLP), InvalidInput, ["duplicate key 'x'"]),
    "extra-keys": (lambda: SM(_v2({"inputs": ROW, "foo": 1}), None, MLP), InvalidInput, ["['foo']", "'inputs'"]),
    "list-for-two": (lambda: SM(_v2([[1, 2, 3]]), None, TWO), InvalidInput, ["single-input", "2 inputs", "mask: bool"]),
    "wrong-rank": (lambda: SM(_v2(ROW[0]), None, MLP), InvalidInput, ["expected rank 2", "given rank 1", "[784]"]),
    "wrong-dim": (lambda: SM(_v2([[0.0] * 783]), None, MLP), InvalidInput, ["dimension 1 must be 784", "given 783"]),
    "ragged": (lambda: SM(_v2([[1.0, 2.0], [3.0]]), None, MLP), InvalidInput, ["rectangular", "different lengths"]),
    "null": (lambda: SM(_v2([[1.0, None]]), None, MLP), InvalidInput, ["only numbers", "null"]),
    "strings": (lambda: SM(_v2([["a", "b"]]), None, MLP), InvalidInput, ["only numbers", "strings"]),
    "float-to-int": (lambda: SM(_v2([[1.5]]), None, [IOSpec("i", [None, 1], "int32")]), InvalidInput,
                     ["expected dtype int32 (INT32)", "given float64", "never cast to integers"]),
    "int-overflow": (lambda: SM(_v2([[2**40]]), None, [IOSpec("i", [None, 1], "int32")]), InvalidInput,
                     ["must fit int32", str(2**40)]),
    "fp16-overflow": (lambda: SM(_v2([[1e6]]), None, [IOSpec("h", [None, 1], "float16")]), InvalidInput,
                      ["out of range for float16", "65504"]),
    "int-to-bool": (lambda: SM(_v2([[1, 0, 1]]), None, [IOSpec("m", [None, 3], "bool")]), InvalidInput,
                    ["expected dtype bool (BOOL)", "given int64", "true/false"]),
    "instances-empty": (lambda: SM(_v2({"instances": []}), None, MLP), InvalidInput, ["non-empty list", "given list"]),
    "instances-mixed": (lambda: SM(_v2({"instances": [{"x": [1.0]}, [1.0]]}), None, MLP), InvalidInput, ["mixes"]),
    "instances-keys": (lambda: SM(_v2({"instances": [{"x": [1.0] * 3, "mask": [True] * 3}, {"x": [1.0] * 3}]}),
                                  None, TWO), InvalidInput, ["row 1 has keys ['x']", "row 0 has ['x', 'mask']"]),
    # SageMaker binary
    "npy-pickled": (lambda: SM(_pickled_npy(), "application/x-npy", MLP), InvalidInput, ["unpickling", "refused"]),
    "npz-pickled": (lambda: SM(_npz(x=np.array([_Boom()], dtype=object)), "application/x-npz", MLP), InvalidInput,
                    ["unpickling", "x.npy"]),
    "npy-truncated": (lambda: SM(_npy(X1)[:-4], "application/x-npy", MLP), InvalidInput,
                      ["3136 bytes", "given 3132", "truncated"]),
    "npy-huge-header": (lambda: SM(_huge_npy_header(), "application/x-npy", MLP), InvalidInput,
                        ["float64[1000000000000] = 8000000000000 bytes", "given 16 bytes"]),
    "npy-garbage": (lambda: SM(b"not an npy file at all", "application/x-npy", MLP), InvalidInput,
                    ["not a valid .npy", "np.save"]),
    "npy-for-two": (lambda: SM(_npy(X1), "application/x-npy", TWO), InvalidInput, ["single-input", ".npz"]),
    "npz-garbage": (lambda: SM(b"PK\x03\x04garbage", "application/x-npz", MLP), InvalidInput, ["not a valid .npz"]),
    "npz-wrong-name": (lambda: SM(_npz(y=X1), "application/x-npz", MLP), InvalidInput, ["unknown ['y']"]),
    "npz-duplicate": (lambda: SM(_bad_zip_duplicate(X1), "application/x-npz", MLP), InvalidInput, ["duplicate ['x']"]),
    "npz-truncated": (lambda: SM(_npz(x=X1)[:-30], "application/x-npz", MLP), InvalidInput, [".npz"]),
    "raw-size": (lambda: SM(b"\0" * 3137, "application/octet-stream", MLP), InvalidInput,
                 ["row is 3136 bytes", "given 3137"]),
    "raw-empty": (lambda: SM(b"", "application/octet-stream", MLP), InvalidInput, ["given 0 bytes"]),
    "raw-two-inputs": (lambda: SM(b"\0" * 12, "application/octet-stream", TWO), InvalidInput, ["single-input"]),
    "raw-dynamic": (lambda: SM(b"\0" * 4, "application/octet-stream", [IOSpec("x", [None, None], "float32")]),
                    InvalidInput, ["fixed", "x: float32[?,?]", "application/x-npy"]),
    "raw-zero-row": (lambda: SM(b"", "application/octet-stream", [IOSpec("x", [None, 0], "float32")]), InvalidInput,
                     ["a row is 0 bytes"]),
    "raw-bool-byte": (lambda: SM(b"\x00\x02\x01", "application/octet-stream", [IOSpec("m", [None, 3], "bool")]),
                      InvalidInput, ["0 or 1", "given a byte of 2"]),
    "content-type": (lambda: SM(b"1,2,3", "text/csv", MLP), UnsupportedMediaType,
                     ["'text/csv'", "application/json", "application/x-npy"]),
    # Open Inference Protocol
    "v2-malformed": (lambda: decode_v2(b'{"inputs": [', None, MLP), InvalidInput, ["malformed JSON"]),
    "v2-not-object": (lambda: decode_v2(b"[]", None, MLP), InvalidInput, ["JSON object", "given list"]),
    "v2-no-inputs": (lambda: decode_v2(_v2({"inputs": []}), None, MLP), InvalidInput, ["non-empty list"]),
    "v2-unknown": (lambda: decode_v2(_v2({"inputs": [_v2_in(name="y")]}), None, MLP), InvalidInput,
                   ["unknown input 'y'", "x: float32[?,784]"]),
    "v2-missing": (lambda: decode_v2(_v2({"inputs": [_v2_in(shape=[1, 3], data=[1, 2, 3])]}), None, TWO),
                   InvalidInput, ["missing ['mask']"]),
    "v2-duplicate": (lambda: decode_v2(_v2({"inputs": [_v2_in(), _v2_in()]}), None, MLP), InvalidInput,
                     ["'x' is given twice"]),
    "v2-datatype": (lambda: decode_v2(_v2({"inputs": [_v2_in(datatype="FP64")]}), None, MLP), InvalidInput,
                    ["expected datatype FP32", "given 'FP64'"]),
    "v2-datatype-unknown": (lambda: decode_v2(_v2({"inputs": [_v2_in(datatype="FLOAT")]}), None, MLP), InvalidInput,
                            ["given 'FLOAT'", "BF16"]),
    "v2-bytes": (lambda: decode_v2(_v2({"inputs": [_v2_in(datatype="BYTES", data=["a"])]}), None, MLP), InvalidInput,
                 ["expected datatype FP32", "given 'BYTES'"]),
    "v2-count": (lambda: decode_v2(_v2({"inputs": [_v2_in(data=[0.0] * 783)]}), None, MLP), InvalidInput,
                 ["needs 784 elements", "given 783"]),
    "v2-rank": (lambda: decode_v2(_v2({"inputs": [_v2_in(shape=[784])]}), None, MLP), InvalidInput,
                ["expected rank 2", "given rank 1"]),
    "v2-fixed-dim": (lambda: decode_v2(_v2({"inputs": [_v2_in(shape=[2, 392])]}), None, MLP), InvalidInput,
                     ["dimension 1 must be 784", "given 392"]),
    "v2-shape-type": (lambda: decode_v2(_v2({"inputs": [_v2_in(shape=[1, -784])]}), None, MLP), InvalidInput,
                      ["non-negative integers", "-784"]),
    "v2-no-data": (lambda: decode_v2(_v2({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32"}]}), None,
                                     MLP), InvalidInput, ["given neither"]),
    "v2-id": (lambda: decode_v2(_v2({"id": 5, "inputs": [_v2_in()]}), None, MLP), InvalidInput,
              ["'id' must be a string", "given int"]),
    "v2-binary-size": (lambda: decode_v2(*_binary(100, b"\0" * 100), MLP), InvalidInput,
                       ["FP32[1, 784] is 3136 bytes", "given binary_data_size 100"]),
    "v2-truncated": (lambda: decode_v2(*_binary(3136, b"\0" * 3000), MLP), InvalidInput,
                     ["has only 3000 bytes", "truncated"]),
    "v2-extra-bytes": (lambda: decode_v2(*_binary(3136, b"\0" * 3140), MLP), InvalidInput,
                       ["3140 bytes", "add up to 3136"]),
    "v2-binary-no-header": (lambda: decode_v2(_binary(3136, b"")[0], None, MLP), InvalidInput,
                            ["binary_data_size but the request has no Inference-Header-Content-Length"]),
    "v2-binary-body-no-header": (lambda: decode_v2(_binary(3136, b"\0" * 3136)[0], None, MLP), InvalidInput,
                                 ["malformed JSON", "Extra data", "need Inference-Header-Content-Length"]),
    "v2-header-too-long": (lambda: decode_v2(b"{}", 10, MLP), InvalidInput,
                           ["Inference-Header-Content-Length is 10", "expected 1..2"]),
    "v2-data-and-binary": (lambda: decode_v2(*_binary(3136, b"\0" * 3136, data=[1]), MLP), InvalidInput, ["not both"]),
    "v2-bool-byte": (lambda: decode_v2(*v2_body([("x", np.zeros((1, 3), np.float32), False),
                                                 ("mask", np.array([[2, 0, 1]], np.uint8).view(bool), True)]), TWO),
                     InvalidInput, ["0 or 1", "given a byte of 2"]),
    "v2-output-unknown": (lambda: decode_v2(_v2({"inputs": [_v2_in()], "outputs": [{"name": "zz"}]}), None, MLP, OUTS),
                          InvalidInput, ["unknown output 'zz'", "['logits', 'ids']"]),
    "v2-output-duplicate": (lambda: decode_v2(_v2({"inputs": [_v2_in()], "outputs": [{"name": "ids"}] * 2}), None, MLP),
                            InvalidInput, ["'ids' is requested twice"]),
    "v2-output-binary-flag": (lambda: decode_v2(_v2({"inputs": [_v2_in()], "outputs": [
        {"name": "ids", "parameters": {"binary_data": "yes"}}]}), None, MLP), InvalidInput, ["boolean binary_data"]),
    "v2-binary-output-param": (lambda: decode_v2(_v2({"inputs": [_v2_in()], "parameters": {"binary_data_output": 1}}),
                                                 None, MLP), InvalidInput, ["binary_data_output", "given 1"]),
    "v2-encode-unknown-output": (lambda: encode_v2("m", "1", [X1], OUTS[:1], V2Request(None, {}, ["nope"])),
                                 InvalidInput, ["unknown output 'nope'", "['logits']"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case) -> None:
    call, exc_type, fragments = BAD[case]
    with pytest.raises(exc_type) as info:
        call()
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    assert info.value.status == {InvalidInput: 400, UnsupportedMediaType: 415}[exc_type]
    assert "Traceback" not in msg
    assert _CALLED == []  # nothing was ever unpickled


def test_npz_expansion_limit(monkeypatch) -> None:
    monkeypatch.setattr(codec, "NPZ_MAX_BYTES", 1000)
    with pytest.raises(InvalidInput, match="expand to 3264 bytes; at most 1000"):
        decode_sagemaker(_npz(True, x=X1), "application/x-npz", MLP)

"""The OpenAPI document: valid OpenAPI 3.0, every route of the server, schemas that accept and refuse the right bodies."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mlxport.serve.openapi import NAME_PATTERN, OPEN_ROUTES, ROUTES, VERSION_PATTERN, openapi_spec

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return openapi_spec()


def _operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.upper(), path): op for path, item in spec["paths"].items()
            for m, op in item.items() if m in HTTP_METHODS}


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON-schema validator with OpenAPI 3.0 semantics that resolves the spec's #/components refs."""
    from openapi_schema_validator import OAS30Validator

    return OAS30Validator({**schema, "components": spec["components"]})


def _body_schema(spec: dict[str, Any], method: str, path: str, media: str = "application/json") -> Any:
    return _validator(spec, _operations(spec)[(method, path)]["requestBody"]["content"][media]["schema"])


def _component(spec: dict[str, Any], name: str) -> Any:
    return _validator(spec, {"$ref": f"#/components/schemas/{name}"})


@pytest.mark.parametrize("bearer_required", [False, True])
def test_spec_is_valid_openapi_30(bearer_required: bool) -> None:
    doc = openapi_spec(bearer_required=bearer_required)
    assert doc["openapi"] == "3.0.3"
    json.dumps(doc, allow_nan=False)  # plain JSON, servable as is
    try:
        from openapi_spec_validator import OpenAPIV30SpecValidator
    except ImportError:
        import schemathesis

        loaded = schemathesis.openapi.from_dict(doc)
        assert sum(1 for r in loaded.get_all_operations() if r.ok()) == len(ROUTES)
        return
    errors = [e.message for e in OpenAPIV30SpecValidator(doc).iter_errors()]
    assert errors == []


def test_every_route_and_nothing_else(spec: dict[str, Any]) -> None:
    assert len(set(ROUTES)) == len(ROUTES), "duplicate route in ROUTES"
    assert set(_operations(spec)) == set(ROUTES)
    ids = [op["operationId"] for op in _operations(spec).values()]
    assert len(set(ids)) == len(ids)
    # The design's routes, spelled out once more so a route dropped from ROUTES is caught here.
    expected = {
        ("GET", "/ping"), ("POST", "/invocations"), ("GET", "/models"), ("POST", "/models"),
        ("GET", "/models/{name}"), ("DELETE", "/models/{name}"), ("POST", "/models/{name}/invoke"),
        ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("GET", "/v2"),
        ("GET", "/v2/models/{model}"), ("GET", "/v2/models/{model}/versions/{version}"),
        ("GET", "/v2/models/{model}/ready"), ("GET", "/v2/models/{model}/versions/{version}/ready"),
        ("POST", "/v2/models/{model}/infer"), ("POST", "/v2/models/{model}/versions/{version}/infer"),
        ("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/{model}/load"),
        ("POST", "/v2/repository/models/{model}/unload"), ("POST", "/v2/repository/models/{model}/rollback"),
        ("GET", "/metrics"), ("GET", "/openapi.json"),
        ("GET", "/v1/models"), ("GET", "/v1/models/{model}"), ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
    }
    assert set(ROUTES) == expected


def test_app_routes_match_when_app_is_importable() -> None:
    app_module = pytest.importorskip("mlxport.serve.app", reason="the app (or its codec) is not written yet")
    from mlxport.serve.metrics import Metrics

    app = app_module.create_app(None, app_module.AppConfig(), Metrics())
    served = {(m, r.path) for r in app.routes for m in (r.methods or ()) if m != "HEAD"}
    assert served == set(ROUTES)


def test_path_parameters_match_the_repository_rules(spec: dict[str, Any]) -> None:
    from mlxport.serve import repository

    assert NAME_PATTERN == repository.NAME_RE.pattern
    assert VERSION_PATTERN == repository.VERSION_RE.pattern
    for (method, path), op in _operations(spec).items():
        declared = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
        assert set(declared) == set(re.findall(r"{(\w+)}", path)), (method, path)
        for name, p in declared.items():
            assert p["required"] is True
            assert p["schema"]["pattern"] == (VERSION_PATTERN if name == "version" else NAME_PATTERN)
    name_re, version_re = re.compile(NAME_PATTERN), re.compile(VERSION_PATTERN)
    for good in ("mlp", "MLP-2", "a.b_c", "x" * 128):
        assert name_re.match(good)
    for bad in ("", "..", ".hidden", "a/b", "../etc", "x" * 129, "a b", "é"):
        assert not name_re.match(bad), bad
    assert version_re.match("3") and not version_re.match("-1") and not version_re.match("1a")


def test_security_and_error_responses(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "Set with --token or MLXPORT_TOKEN."}
    assert {} in spec["security"], "the token is optional unless bearer_required=True"
    assert openapi_spec(bearer_required=True)["security"] == [{"bearerAuth": []}]
    for key, op in _operations(spec).items():
        # The OpenAI-compatible routes answer errors in OpenAI's shape.
        error_ref = {"$ref": "#/components/schemas/" + ("OpenAIError" if key[1].startswith("/v1") else "Error")}
        responses = op["responses"]
        assert any(code.startswith("2") for code in responses), key
        if key in OPEN_ROUTES:
            assert op["security"] == [] and "401" not in responses, key
        else:
            assert "security" not in op and "401" in responses, key
            assert "WWW-Authenticate" in responses["401"]["headers"]
        for code, response in responses.items():
            if int(code) >= 400 and code != "503" or code == "503" and ("/infer" in key[1] or "/v1" in key[1]):
                assert response["content"]["application/json"]["schema"] == error_ref, (key, code)
    # Compute routes document every failure the design names, and 503 carries Retry-After.
    for key in (("POST", "/invocations"), ("POST", "/models/{name}/invoke"),
                ("POST", "/v2/models/{model}/infer"), ("POST", "/v2/models/{model}/versions/{version}/infer"),
                ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")):
        responses = _operations(spec)[key]["responses"]
        assert {"200", "400", "404", "413", "503", "504"} <= set(responses), key
        assert "Retry-After" in responses["503"]["headers"]


def test_v2_infer_request_schema(spec: dict[str, Any]) -> None:
    op = _operations(spec)[("POST", "/v2/models/{model}/infer")]
    header = [p for p in op["parameters"] if p["in"] == "header"]
    assert [(p["name"], p["required"], p["schema"]["type"]) for p in header] == [
        ("Inference-Header-Content-Length", False, "integer")]
    assert set(op["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    v = _body_schema(spec, "POST", "/v2/models/{model}/infer")
    good = [
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6.5]}]},
        {"id": "r1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]]}],
         "outputs": [{"name": "y", "parameters": {"binary_data": True}}], "parameters": {"binary_data_output": False}},
        {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32",
                     "parameters": {"binary_data_size": 3136}}]},
        {"inputs": [{"name": "m", "shape": [3], "datatype": "BOOL", "data": [True, False, True]}]},
    ]
    for body in good:
        assert v.is_valid(body), list(v.iter_errors(body))
    bad = [
        {},  # no inputs
        {"inputs": []},
        {"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]},  # no name
        {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]},  # negative dim
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]},  # not a v2 datatype
        {"inputs": [{"name": "x", "shape": [1] * 33, "datatype": "FP32", "data": [1]}]},  # rank over 32
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [{"a": 1}]}]},  # objects are no data
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                     "parameters": {"binary_data_size": -4}}]},
        {"inputs": [{"name": "x", "shape": "1", "datatype": "FP32", "data": [1]}]},
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"binary_data": 1}]},
    ]
    for body in bad:
        assert not v.is_valid(body), body


def test_sagemaker_request_schemas(spec: dict[str, Any]) -> None:
    for path in ("/invocations", "/models/{name}/invoke"):
        content = _operations(spec)[("POST", path)]["requestBody"]["content"]
        assert set(content) == {"application/json", "application/x-npy", "application/x-npz",
                                "application/octet-stream"}
        assert content["application/x-npy"]["schema"] == {"type": "string", "format": "binary"}
    ops = _operations(spec)
    assert [p["name"] for p in ops[("POST", "/invocations")]["parameters"]] == [
        "X-Amzn-SageMaker-Target-Model", "X-Amzn-SageMaker-Custom-Attributes"]
    v = _body_schema(spec, "POST", "/invocations")
    for body in ([[0.5, 1.0]], {"inputs": [[1, 2]]}, {"inputs": {"x": [[1, 2]]}},
                 {"instances": [[1, 2], [3, 4]]}, {"instances": [{"x": [1, 2]}]}, {"x": [1.0], "mask": [True]}):
        assert v.is_valid(body), body
    for body in ("text", 3, {}, {"instances": "row"}, {"inputs": "abc"}, {"x": {"y": "z"}}):
        assert not v.is_valid(body), body
    load = _body_schema(spec, "POST", "/models")
    assert load.is_valid({"model_name": "mlp", "url": "/opt/ml/models/mlp"})
    for body in ({"model_name": "mlp"}, {"url": "/x"}, {"model_name": "../x", "url": "/x"},
                 {"model_name": "mlp", "url": ""}, {"model_name": 3, "url": "/x"}):
        assert not load.is_valid(body), body
    # Keys the server ignores are allowed (a stricter schema makes fuzzers expect 400s that never come) ...
    assert load.is_valid({"model_name": "mlp", "url": "/x", "extra": 1})
    # ... but next to "inputs" / "instances" the codec refuses anything but TF-Serving's signature_name.
    branches = spec["components"]["schemas"]["SageMakerJSONRequest"]["anyOf"]
    assert [b.get("additionalProperties") for b in branches[:2]] == [False, False]
    assert v.is_valid({"inputs": [[1, 2]], "signature_name": "serving_default"})


def test_repository_load_body(spec: dict[str, Any]) -> None:
    op = _operations(spec)[("POST", "/v2/repository/models/{model}/load")]
    assert op["requestBody"]["required"] is False
    v = _body_schema(spec, "POST", "/v2/repository/models/{model}/load")
    for body in ({}, {"parameters": {}}, {"parameters": {"version": "3"}}, {"parameters": {"version": 3}},
                 {"parameters": None}, {"parameters": {"version": None}}):
        assert v.is_valid(body), body
    for body in ({"parameters": {"version": "v3"}}, {"parameters": {"version": -1}}, {"parameters": []},
                 {"parameters": {"version": "../1"}}):
        assert not v.is_valid(body), body
    # index / unload / rollback read no body, so the spec declares none (a fuzzer would otherwise expect 400s).
    for key in (("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/{model}/unload"),
                ("POST", "/v2/repository/models/{model}/rollback")):
        assert "requestBody" not in _operations(spec)[key]


def test_response_schemas_accept_what_the_server_sends(spec: dict[str, Any]) -> None:
    samples = {
        "V2ModelMetadata": {"name": "mlp", "versions": ["1", "2"], "platform": "onnxruntime_onnx",
                            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 784]}],
                            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}],
                            "parameters": {"version": "2", "backend": "onnxruntime", "max_batch_size": 64}},
        "V2InferResponse": {"model_name": "mlp", "model_version": "2", "id": "r1",
                            "outputs": [{"name": "y", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 0.9]},
                                        {"name": "z", "shape": [1], "datatype": "INT64",
                                         "parameters": {"binary_data_size": 8}}]},
        "V2ServerMetadata": {"name": "mlxport", "version": "0.1.0", "extensions": ["binary_tensor_data"]},
        "V2ModelReady": {"name": "mlp", "ready": False},
        "RepositoryIndex": [{"name": "mlp", "version": "1", "state": "READY", "reason": "default"},
                            {"name": "mlp", "version": "2", "state": "UNAVAILABLE", "reason": "bad artifact"}],
        "RepositoryModelState": {"name": "mlp", "state": "UNAVAILABLE"},
        "SageMakerModelList": {"models": [{"modelName": "mlp", "modelUrl": "/opt/ml/model", "version": None,
                                           "state": "LOADING"}]},
        "SageMakerJSONResponse": {"outputs": {"y": [[0.1, 0.9]]}, "predictions": [[0.1, 0.9]]},
        "Ping": {"status": "loading", "models": [{"name": "mlp", "version": "1", "state": "LOADING",
                                                  "reason": ""}]},
        "Error": {"error": "unknown model 'x'; loaded models: mlp"},
    }
    for name, sample in samples.items():
        v = _component(spec, name)
        assert v.is_valid(sample), (name, list(v.iter_errors(sample)))
    assert not _component(spec, "V2ModelMetadata").is_valid({"name": "mlp", "platform": "x", "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-2]}], "outputs": []})
    assert not _component(spec, "Error").is_valid({"detail": "x"})


@pytest.mark.slow
def test_schemathesis_generates_cases_for_every_route(spec: dict[str, Any]) -> None:
    """Each operation yields requests; their JSON bodies validate against the spec's own schema."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.core import NotSet

    loaded = schemathesis.openapi.from_dict(spec)
    seen = set()
    for result in loaded.get_all_operations():
        op = result.ok()
        cases: list[Any] = []

        @given(op.as_strategy())
        @settings(max_examples=5, database=None, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def draw(case: Any) -> None:
            cases.append(case)

        draw()
        key = (op.method.upper(), op.path)
        seen.add(key)
        assert cases, key
        for case in cases:
            if case.media_type == "application/json" and not isinstance(case.body, NotSet):  # optional bodies
                v = _body_schema(spec, *key)
                assert v.is_valid(case.body), (key, case.body)
            for name, value in (case.path_parameters or {}).items():
                assert re.match(VERSION_PATTERN if name == "version" else NAME_PATTERN, value), (key, value)
    assert seen == set(ROUTES)

"""The one HTTP layer, in process: route table, body rule, error shapes, 404/405 logged and counted; light imports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")

from mlxport.serve import http  # noqa: E402
from mlxport.serve.errors import InvalidInput, PayloadTooLarge  # noqa: E402
from mlxport.serve.protocols import ROUTES  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"


def _request(headers: dict[str, str], chunks: list[bytes]) -> Any:
    from starlette.requests import Request

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(k.lower().encode(), v.encode())
                                                                          for k, v in headers.items()]}
    return Request(scope, receive)


def test_one_content_length_rule() -> None:
    read = lambda headers, chunks: asyncio.run(http.read_body(_request(headers, chunks), 10))  # noqa: E731
    assert read({"content-length": "5"}, [b"12345"]) == b"12345"
    assert read({}, [b"123", b"45"]) == b"12345"  # chunked: counted while streaming
    with pytest.raises(InvalidInput, match="Content-Length must be a number of bytes; got 'ten'"):
        read({"content-length": "ten"}, [b""])
    with pytest.raises(InvalidInput, match="number of bytes"):
        read({"content-length": "-1"}, [b""])
    with pytest.raises(PayloadTooLarge, match="over the limit of 10 bytes"):
        read({"content-length": "11"}, [b"x" * 11])
    with pytest.raises(PayloadTooLarge):
        read({}, [b"x" * 6, b"x" * 6])


def test_routes_are_declared_once() -> None:
    keys = [(r.method, r.path) for r in ROUTES]
    assert len(keys) == len(set(keys))
    fast = {(r.method, r.path) for r in ROUTES if r.fast}
    assert fast == {("POST", "/invocations"), ("POST", "/models/{name}/invoke"), ("POST", "/v2/models/{model}/infer"),
                    ("POST", "/v2/models/{model}/versions/{version}/infer")}
    # Every /v1 route answers errors in OpenAI's shape, every other route in {"error": str}.
    for r in ROUTES:
        assert (r.error_schema == "OpenAIError") == r.path.startswith("/v1"), r.path
        assert (r.error_body is http.plain_error) == (not r.path.startswith("/v1")), r.path


def test_match() -> None:
    segments = ("", "v2", "models", "{model}", "versions", "{version}", "infer")
    assert http.match(segments, "/v2/models/mlp/versions/3/infer".split("/")) == {"model": "mlp", "version": "3"}
    for path in ("/v2/models//versions/3/infer", "/v2/models/mlp/infer", "/v2/models/../../etc/infer",
                 "/v2/models/mlp/versions/3/infer/"):
        assert http.match(segments, path.split("/")) is None, path


class _Metrics:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def request(self, *args: Any) -> None:
        self.calls.append(args)


def _call(app: Any, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080), "scheme": "http", "root_path": ""}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def test_unknown_routes_are_logged_and_counted(capsys: pytest.CaptureFixture[str]) -> None:
    from mlxport.serve.app import AppConfig, create_app

    metrics = _Metrics()
    app = create_app(None, AppConfig(token="t0k"), metrics)  # type: ignore[arg-type]
    status, _, body = _call(app, "GET", "/no/such/route")
    assert status == 404 and "no route GET /no/such/route" in json.loads(body)["error"]
    status, headers, body = _call(app, "DELETE", "/ping")
    assert status == 405 and headers["allow"] == "GET" and "DELETE is not allowed" in json.loads(body)["error"]
    # The token is checked before anything else; /v1 answers in OpenAI's shape.
    status, headers, body = _call(app, "GET", "/v1/models")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    status, _, body = _call(app, "GET", "/v2")
    assert status == 401 and "bearer" in json.loads(body)["error"]
    assert [(c[2], c[3]) for c in metrics.calls] == [("http", 404), ("http", 405), ("openai", 401), ("v2", 401)]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["method"], r["path"], r["status"]) for r in lines] == [
        ("GET", "/no/such/route", 404), ("DELETE", "/ping", 405), ("GET", "/v1/models", 401), ("GET", "/v2", 401)]
    assert all(r["model"] is None and r["bytes_out"] > 0 and r["client"] == "127.0.0.1" for r in lines)


def test_serve_imports_no_mlx() -> None:
    """``mlxport.serve`` imports nothing heavy, and ``mlxport.serve.codec`` works with MLX blocked."""
    code = f"""
import sys, types
for name in ("mlx", "mlx.core", "mlx.nn"):
    sys.modules[name] = None  # any import of MLX now raises
try:
    import mlxport
except ImportError:  # a package root that still imports MLX: stand in for it, to check serve's own imports
    root = types.ModuleType("mlxport")
    root.__path__ = [{str(SRC / "mlxport")!r}]
    sys.modules["mlxport"] = root
before = set(sys.modules)
import mlxport.serve
heavy = {{"numpy", "starlette", "prometheus_client", "onnxruntime", "torch"}} & (set(sys.modules) - before)
assert not heavy, heavy
import numpy as np
from mlxport.serve import codec
data, ctype = codec.encode_sagemaker([np.ones((1, 2), np.float32)], ["y"], None)
assert ctype == "application/json" and b'"predictions"' in data, data
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]

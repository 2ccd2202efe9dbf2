"""Fuzz every operation of the served OpenAPI spec with schemathesis: no input may produce a 5xx.

The schema is loaded when the module is collected, from the same function the server calls for
``/openapi.json`` (a test checks the served document equals it), and each case is sent to a real server
process. schemathesis' fixture-based loader (``schemathesis.pytest.from_fixture``) is not used: up to
schemathesis 4.32.5 it sets ``Function._nodeid``, which pytest 9.2 removed (AttributeError at run time).

Bounded: a few examples per operation (``MLXPORT_FUZZ_EXAMPLES``, default 5) and a time cap for the whole
module (``MLXPORT_FUZZ_SECONDS``, default 20); operations past the cap are skipped. The server gets its own
copy of the repository, since generated requests may unload or delete models.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

from .conftest import Models, Server, ServerPool  # noqa: E402

EXAMPLES = int(os.environ.get("MLXPORT_FUZZ_EXAMPLES", "5"))
BUDGET_S = float(os.environ.get("MLXPORT_FUZZ_SECONDS", "20"))
_started: list[float] = []


@pytest.fixture(scope="module")
def fuzz_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fuzz_repo")
    for name in ("mlp", "two_in", "fixed", "failing"):
        models.version_dir(root, name, 1)
    pool = ServerPool(tmp_path_factory.mktemp("fuzz_logs"))
    try:
        # A small body limit keeps generated bodies cheap; a token would only test the 401 path.
        yield pool.start([str(root), "--max-body-size", "256KiB", "--poll-interval", "0", "--request-timeout", "10"])
    finally:
        pool.close()


def _spec() -> dict[str, Any]:
    from mlxport.serve.openapi import openapi_spec

    return openapi_spec(bearer_required=False)  # the fuzz server runs without a token


schema = schemathesis.openapi.from_dict(_spec())


def test_fuzzed_spec_is_the_served_one(fuzz_server: Server) -> None:
    """What is fuzzed below is exactly the document the running server publishes."""
    response = fuzz_server.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == _spec()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, fuzz_server: Server) -> None:
    if not _started:
        _started.append(time.monotonic())
    if time.monotonic() - _started[0] > BUDGET_S:
        pytest.skip(f"fuzz time budget spent ({BUDGET_S:g} s; MLXPORT_FUZZ_SECONDS raises it)")
    response = case.call(base_url=fuzz_server.url, timeout=15)
    assert response.status_code < 500 or response.status_code in (503, 504), (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}")
    if response.status_code >= 400:
        error = response.json().get("error")
        if case.path.startswith("/v1/") and isinstance(error, dict):  # the OpenAI API's {"error": {"message"}}
            error = error.get("message")
        assert isinstance(error, str) and error and "Traceback" not in response.text, response.text[:500]
    assert fuzz_server.proc.poll() is None, "the server died"


def test_server_survived_the_fuzz(fuzz_server: Server, models: Models) -> None:
    """After the fuzz pass the server is alive, has no traceback in its log, and /v2/health/live answers."""
    assert fuzz_server.proc.poll() is None
    assert fuzz_server.get("/v2/health/live").status_code == 200
    log = fuzz_server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:4000]
    assert Path(fuzz_server.log_path).exists()

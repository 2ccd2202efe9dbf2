"""Helpers for the packaging tests: the ONNX Runtime reference, a server launcher, tree snapshots."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np


def onnx_reference(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime directly on the original artifact (the reference every bundle is compared with)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` (files with their size, folders as -1)."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlxport_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "MLXPORT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "mlxport", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def running_server(args: list[str], env: dict[str, str], port: int, log: Path,
                   timeout: float = 60) -> Iterator[str]:
    """Start ``mlxport serve ARGS`` and yield its base URL once /ping answers 200; SIGTERM it afterwards."""
    import requests

    base_env = {k: v for k, v in os.environ.items() if k not in ("SM_MODEL_DIR", "SAGEMAKER_BIND_TO_PORT")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlxport", "serve", *args], env={**base_env, **env},
                                stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
                try:
                    if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"server not ready in {timeout} s:\n{log.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

"""`mlxport export-lm` and `mlxport generate` as a user runs them: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from mlxport.lm.generate import GenerationConfig, LMRunner

from .conftest import Exported, LMZoo

PROMPT = "Beautiful is better than"


def mlxport(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLXPORT_DEBUG="0")
    return subprocess.run([sys.executable, "-m", "mlxport", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="module")
def portable_int4(lm_zoo: LMZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "llama-int4-portable"
    done = mlxport("export-lm", str(lm_zoo.source("llama")), "-o", str(out), "--precision", "int4", "--portable", "-q")
    assert done.returncode == 0, done.stderr
    assert "greedy tokens match mlx-lm: True (8 tokens)" in done.stdout, done.stdout
    assert f"wrote {out}" in done.stdout and "model.onnx" in done.stdout
    return out


def test_export_lm_portable_int4(portable_int4: Path) -> None:
    """--portable: standard ONNX at opset 17 (no com.microsoft op); --precision int4: packed 4-bit words inside."""
    model = onnx.load(str(portable_int4 / "model.onnx"))
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 17 and "com.microsoft" not in opsets, opsets
    ops = {n.op_type for n in model.graph.node}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    assert {"MatMulNBits", "GroupQueryAttention", "SkipSimplifiedLayerNormalization"}.isdisjoint(ops)
    # The standard lowering unpacks MLX's uint32 words at run time (BitShift): the file stays 4-bit.
    assert "BitShift" in ops
    meta = json.loads((portable_int4 / "mlxport_lm.json").read_text())
    assert (meta["precision"], meta["portable"], meta["greedy_match"]) == ("int4", True, True)


@pytest.mark.parametrize("backend", ["genai", "onnxruntime"])
def test_generate_prints_the_completion(portable_int4: Path, backend: str) -> None:
    done = mlxport("generate", str(portable_int4), "--prompt", PROMPT, "--max-tokens", "12", "--backend", backend)
    assert done.returncode == 0, done.stderr
    expected = LMRunner(portable_int4, backend=backend).generate(PROMPT, GenerationConfig(max_tokens=12))
    assert done.stdout == expected.text and expected.tokens
    assert f"[{backend}: {len(expected.tokens)} tokens in" in done.stderr
    assert f"finish: {expected.finish_reason}" in done.stderr


def test_generate_chat_stop_and_sampling(llama: Exported) -> None:
    lm = LMRunner(llama.folder, backend="onnxruntime")
    prompt = lm.apply_chat_template([{"role": "user", "content": PROMPT}])
    full = lm.generate(prompt, GenerationConfig(max_tokens=16, temperature=0.8, top_k=20, seed=7))
    stop = next(full.text[i:i + 2] for i in range(2, len(full.text) - 1) if full.text[i:i + 2].isalnum())
    done = mlxport("generate", str(llama.folder), "--prompt", PROMPT, "--chat", "--max-tokens", "16",
                   "--temperature", "0.8", "--top-k", "20", "--seed", "7", "--stop", stop, "--backend", "onnxruntime")
    assert done.returncode == 0, done.stderr
    assert done.stdout == full.text[:full.text.find(stop)] and "finish: stop" in done.stderr


def test_generate_bad_option_is_a_usage_error(llama: Exported) -> None:
    done = mlxport("generate", str(llama.folder), "--prompt", PROMPT, "--top-p", "0")
    assert done.returncode == 2 and "top_p must be in (0, 1]; got 0.0" in done.stderr, done.stderr


def test_export_lm_refuses_a_non_mlx_lm_folder(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    done = mlxport("export-lm", str(tmp_path), "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "is not an mlx-lm model folder: it has no config.json" in done.stderr and "hint:" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_generate_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    done = mlxport("generate", str(tmp_path), "--prompt", PROMPT)
    assert done.returncode == 1 and "not an exported LM folder" in done.stderr and "mlxport export-lm" in done.stderr


def test_help_lists_the_lm_commands() -> None:
    done = mlxport("--help")
    assert done.returncode == 0 and "export-lm" in done.stdout and "generate" in done.stdout
    sub = mlxport("export-lm", "--help")
    assert sub.returncode == 0 and "--precision" in sub.stdout and "--portable" in sub.stdout

"""The graph rewritten for ONNX Runtime's fused kernels (``export_lm(..., fused=True)``, rewrite/ort_fused.py; checked against MLX by lm/ort_fused.py).

GroupQueryAttention writes the cache in place (GenAI shares past and present: ``past_present_share_buffer``),
SkipSimplifiedLayerNormalization fuses the residual adds, sibling matmuls (q/k/v, gate/up) are merged. The
fused graph must give mlx-lm's greedy tokens in GenAI and in mlxport's ORT loop, match MLX step by step, keep
left padding masked, and give the standard graph's logits.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mlxport.runners import OnnxRunner

from . import checks, lmzoo
from .conftest import Exported, LMZoo

COUNT = 16
ARCHS = ("llama", "qwen2", "mixtral")


def _params() -> list:
    return [pytest.param((arch, variant), id=f"{arch}-{variant}",
                         marks=() if (arch, variant) == ("llama", "float") else pytest.mark.slow)
            for arch in ARCHS for variant in ("float", "q4", "int4")]


PARAMS = _params()


@pytest.fixture
def fused(lm_zoo: LMZoo, request: pytest.FixtureRequest) -> Exported:
    arch, variant = request.param
    return lm_zoo.export(arch, variant, fused=True)


def _ops(folder) -> Counter:
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return Counter(n.op_type for n in graph.node)


@pytest.mark.parametrize("fused", PARAMS, indirect=True)
def test_fused_greedy_tokens_equal_mlx_lm(lm_zoo: LMZoo, fused: Exported) -> None:
    expected = lmzoo.mlx_greedy(fused.model, lmzoo.PROMPT, COUNT)
    assert len(set(expected)) >= 3, expected
    assert fused.result.greedy_match is True
    # GenAI shares one max-length buffer between past and present (written in place by GroupQueryAttention);
    # the ORT loop feeds each present back as a fresh past: both must decode mlx-lm's tokens.
    for backend in ("genai", "onnxruntime"):
        got = checks.runner_greedy(lm_zoo.runner(fused.folder, backend), lmzoo.PROMPT, COUNT)
        assert got == checks.until_eos(expected), f"{backend}: {got} != mlx-lm {expected}"


@pytest.mark.parametrize("fused", PARAMS, indirect=True)
def test_fused_steps_match_mlx(fused: Exported) -> None:
    checks.assert_steps_match_mlx(fused, lmzoo.PROMPT + [90, 17])


@pytest.mark.parametrize("fused", PARAMS, indirect=True)
def test_fused_left_padding_is_masked(fused: Exported) -> None:
    """The padding part of attention_mask reaches GroupQueryAttention as its attention_bias."""
    checks.assert_left_padding(fused, [5, 70, 33, 201, 12, 44, 9], [150, 8, 61])


@pytest.mark.parametrize("fused", PARAMS, indirect=True)
def test_fused_logits_equal_standard_graph(lm_zoo: LMZoo, fused: Exported) -> None:
    """Prefill, a decode step and a multi-token step after a past, batch 1 and 2: fused == standard graph."""
    standard = lm_zoo.export(fused.arch, fused.variant, fused=False)
    spec = fused.result.spec
    a, b = OnnxRunner(standard.folder / "model.onnx"), OnnxRunner(fused.folder / "model.onnx")
    rng = np.random.default_rng(0)
    for batch, seq, past in ((1, 6, 0), (1, 1, 6), (2, 3, 4)):
        ids = rng.integers(3, lmzoo.VOCAB, (batch, seq)).astype(np.int64)
        cache = [rng.standard_normal((batch, spec.num_kv_heads, past, spec.head_dim)).astype(np.float32)
                 for _ in range(2 * spec.num_layers)]
        mask = np.ones((batch, past + seq), np.int64)
        for name, want, got in zip(spec.output_names(), a(ids, mask, *cache), b(ids, mask, *cache)):
            checks.assert_close(f"batch {batch}, {seq} after {past}: {name}", want, got)


def test_fused_graph_structure(llama_fused: Exported) -> None:
    """Per layer one GroupQueryAttention and no Concat/Attention; residual norms and q/k/v fused; GenAI config."""
    ops = _ops(llama_fused.folder)
    layers = llama_fused.result.spec.num_layers
    assert ops["GroupQueryAttention"] == layers and ops["Attention"] == 0, ops
    # 2 per layer minus the first (it normalises the embedding, with no residual add before it).
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * layers and ops["RMSNormalization"] == 1, ops
    assert ops["Split"] == 2 * layers, ops  # q/k/v and gate/up
    genai = json.loads((llama_fused.folder / "genai_config.json").read_text())
    assert genai["search"]["past_present_share_buffer"] is True
    meta = json.loads((llama_fused.folder / "mlxport_lm.json").read_text())
    assert meta["fused"] is True and meta["validation"]["ok"] is True
    assert any("fused graph" in run["label"] for run in meta["validation"]["runs"])
    # The sidecar's checksum follows the rewritten file.
    from mlxport.artifact import file_sha256, read_meta

    path = llama_fused.folder / "model.onnx"
    assert read_meta(path).sha256 == file_sha256(path)


def test_unrecognised_graph_keeps_the_standard_one(lm_zoo: LMZoo) -> None:
    """gemma2 computes its soft-capped, grouped attention by hand (no ONNX Attention node): by default the
    export keeps the standard graph and says why; fused=True makes that an error."""
    from mlx_lm.utils import load

    from mlxport.errors import CaptureError
    from mlxport.lm.export import export_lm

    auto = lm_zoo.export("gemma2", "float")
    assert "not used" in auto.result.report.info["ort fused"]
    assert json.loads((auto.folder / "genai_config.json").read_text())["search"]["past_present_share_buffer"] is False
    assert _ops(auto.folder)["GroupQueryAttention"] == 0
    model, tokenizer, config = load(str(lm_zoo.source("gemma2")), return_config=True)
    with pytest.raises(CaptureError, match="no ONNX Attention"):
        export_lm(model, tokenizer, lm_zoo.root / "gemma2-fused", config=config, fused=True, check_tokens=0)
    assert not (lm_zoo.root / "gemma2-fused" / ".mlxport-fused").exists()


def test_default_export_is_fused(llama: Exported) -> None:
    """Without options the GenAI folder gets the fused graph (measured faster, see docs/lm.md)."""
    assert _ops(llama.folder)["GroupQueryAttention"] == llama.result.spec.num_layers
    assert json.loads((llama.folder / "mlxport_lm.json").read_text())["fused"] is True


def test_fused_and_portable_conflict(lm_zoo: LMZoo, tmp_path) -> None:
    from mlx_lm.utils import load

    from mlxport.lm.export import export_lm

    model, tokenizer, config = load(str(lm_zoo.source("llama")), return_config=True)
    with pytest.raises(ValueError, match="portable"):
        export_lm(model, tokenizer, tmp_path / "out", config=config, fused=True, portable=True)


@pytest.fixture
def llama_fused(lm_zoo: LMZoo) -> Exported:
    return lm_zoo.export("llama", "float", fused=True)

"""Per architecture and precision: export_lm, then greedy tokens in ONNX Runtime GenAI and in mlxport's ORT loop
equal mlx-lm's, the prefill and decode steps equal MLX, and left padding in a batch is masked.

Variants: "float" (float32 folder as it is), "q4" (mlx-lm 4-bit folder, exported without requantizing: its
packed words become MatMulNBits) and "int4" (float folder quantized on export with MLX's own quantization).
Quantized variants are compared with the MLX model in the same quantization, so the agreement required is the
same as for float: all 16 greedy tokens (measured 16/16 for every arch and variant, mlx-lm 0.32.2, ORT 1.32,
onnxruntime-genai 0.18). gemma2 is there for its grouped-query attention (a rank-5 padding mask).
"""

from __future__ import annotations

import pytest

from . import checks, lmzoo
from .conftest import VARIANTS, Exported, LMZoo

COUNT = 16


def _params() -> list:
    out = []
    for arch in lmzoo.ARCHS:
        for variant in VARIANTS:
            fast = (arch, variant) == ("llama", "float")  # the one unmarked representative
            out.append(pytest.param((arch, variant), id=f"{arch}-{variant}", marks=() if fast else pytest.mark.slow))
    return out


@pytest.fixture
def exported(lm_zoo: LMZoo, request: pytest.FixtureRequest) -> Exported:
    arch, variant = request.param
    return lm_zoo.export(arch, variant)


PARAMS = _params()


@pytest.mark.parametrize("exported", PARAMS, indirect=True)
def test_greedy_tokens_equal_mlx_lm(lm_zoo: LMZoo, exported: Exported) -> None:
    expected = lmzoo.mlx_greedy(exported.model, lmzoo.PROMPT, COUNT)
    # A random model that repeats one token would prove little about the cache: the weights are scaled so
    # tokens vary (measured 11-16 distinct of 16 everywhere but gemma2-int4, 3).
    assert len(set(expected)) >= 3, expected
    assert exported.result.greedy_match is True  # export_lm's own 8-token check ran and passed
    for backend in ("genai", "onnxruntime"):
        got = checks.runner_greedy(lm_zoo.runner(exported.folder, backend), lmzoo.PROMPT, COUNT)
        assert got == checks.until_eos(expected), f"{backend}: {got} != mlx-lm {expected}"


@pytest.mark.parametrize("exported", PARAMS, indirect=True)
def test_prefill_and_decode_steps_match_mlx(exported: Exported) -> None:
    checks.assert_steps_match_mlx(exported, lmzoo.PROMPT + [90, 17])


@pytest.mark.parametrize("exported", PARAMS, indirect=True)
def test_left_padding_is_masked(exported: Exported) -> None:
    checks.assert_left_padding(exported, [5, 70, 33, 201, 12, 44, 9], [150, 8, 61])


@pytest.mark.parametrize("exported", PARAMS, indirect=True)
def test_quantized_graph_keeps_weights_packed(exported: Exported) -> None:
    """q4/int4 graphs use MatMulNBits on the packed words; float graphs have no quantized op."""
    import onnx

    ops = [n.op_type for n in onnx.load(str(exported.folder / "model.onnx"), load_external_data=False).graph.node]
    if exported.variant == "float":
        assert "MatMulNBits" not in ops
    else:
        # At least qkv (merged into one by the fused graph) and o of both layers are MatMulNBits (llama: 8 with the
        # MLP's merged gate/up and down; mixtral: 7 with the router and lm_head, its experts' GatherQMM unpacks the
        # same packed words with BitShift).
        assert ops.count("MatMulNBits") >= 2 * 2, sorted(set(ops))

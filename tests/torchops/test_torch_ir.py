"""Torch translations checked on hand-built IR (primitives a CPU trace never yields) and through TorchScript."""

from __future__ import annotations

from typing import Any, Sequence

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch target needs PyTorch: pip install 'mlxport[torch]'")

from mlxport.capture import capture  # noqa: E402
from mlxport.errors import UnsupportedArgumentError, UnsupportedPrimitiveError  # noqa: E402
from mlxport.exporters.torch import lower_torch  # noqa: E402
from mlxport.graph import Graph  # noqa: E402
from mlxport.dtypes import to_tensor  # noqa: E402
from mlxport.validate import compare  # noqa: E402
from tests.ops.cases import BASE_TOL, OpCase, all_cases, default_inputs, to_mx  # noqa: E402
from tests.ops.test_elementwise import FLOATS, IR_CASES, _full_range, _one_node  # noqa: E402
from tests.ops.test_reduce import _scan_graph  # noqa: E402

TORCH_IR = ("BitwiseInvert", "Conjugate")
# The primitives whose parity cases are also run through torch.jit.script below.
SCRIPTED = ("ArgReduce", "Scan", "Sort", "ArgSort", "Partition", "ArgPartition", "LogSumExp", "SearchSorted",
            "BitwiseBinary", "DivMod")


def _run(graph: Graph, feed: Sequence[np.ndarray], script: bool = True) -> list[np.ndarray]:
    module = lower_torch(graph)
    if script:
        module = torch.jit.script(module)
    with torch.no_grad():
        outs = module(*[to_tensor(a) for a in feed])
    return [t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy() for t in outs]


def _ir_params() -> list[Any]:
    return [pytest.param(prim, dtype, shape, id=f"{prim}-{'_'.join(map(str, shape)) or 'scalar'}-{dtype}")
            for prim in TORCH_IR for dtype in IR_CASES[prim][1] for shape in [(2, 3), (), (4, 0)]]


@pytest.mark.parametrize("primitive,dtype,shape", _ir_params())
def test_ir_parity(primitive: str, dtype: str, shape: tuple[int, ...]) -> None:
    arguments, _, reference = IR_CASES[primitive]
    rng = np.random.default_rng(0)
    x = _full_range(rng, [shape], dtype)[0] if dtype not in FLOATS else default_inputs(rng, [shape], dtype)[0]
    x = np.asarray(x)
    expected = np.array(reference(mx.array(x)))
    (got,) = _run(_one_node(primitive, arguments, [(shape, dtype)]), [x])
    check = compare("output", expected, got, *BASE_TOL.get(dtype, (0.0, 0.0)))
    assert check.ok, check.line()


@pytest.mark.parametrize("dtype", ["uint16", "uint64"])
def test_unsigned_bitwise(dtype: str) -> None:
    """The int64 detour of unsigned shifts and inverts, on the widths the parity table leaves out."""
    rng = np.random.default_rng(0)
    a = _full_range(rng, [(64,)], dtype)[0]
    b = np.arange(64, dtype=dtype) % (np.dtype(dtype).itemsize * 8)
    for op, reference in [(3, np.left_shift), (4, np.right_shift), (0, np.bitwise_and)]:
        (got,) = _run(_one_node("BitwiseBinary", [op], [((64,), dtype), ((64,), dtype)]), [a, b])
        np.testing.assert_array_equal(got, reference(a, b))
    (got,) = _run(_one_node("BitwiseInvert", [], [((64,), dtype)]), [a])
    np.testing.assert_array_equal(got, np.invert(a))


def test_conjugate_complex() -> None:
    x = np.array([1 + 2j, -3 - 0.5j, 0j], np.complex64)
    (got,) = _run(_one_node("Conjugate", [], [((3,), "complex64")]), [x], script=False)
    np.testing.assert_array_equal(got, np.conj(x))


# MLX 0.32 cannot export logcumsumexp, so its Scan node (type 4) is built by hand.
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis,reverse,inclusive,dynamic", [
    (1, False, True, False), (1, True, False, False), (0, False, False, False), (1, True, True, True),
    (1, False, False, True)])
def test_logcumsumexp(dtype: str, axis: int, reverse: bool, inclusive: bool, dynamic: bool) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 6)) * 3).astype(dtype)
    x[0, 2] = -np.inf
    x[1, :] = -np.inf
    x[2, 3] = np.inf
    x[3, 1] = np.nan
    module = torch.jit.script(lower_torch(_scan_graph(x.shape, dtype, axis, reverse, inclusive, dynamic)))
    for feed in ([x, x[:, :5]] if dynamic else [x]):
        expected = np.array(mx.logcumsumexp(mx.array(feed), axis=axis, reverse=reverse, inclusive=inclusive))
        (got,) = module(to_tensor(feed))
        rtol, atol = (1e-5, 1e-5) if dtype == "float32" else (1e-3, 1e-3)
        np.testing.assert_allclose(got.float().numpy(), expected.astype(np.float32), rtol=rtol, atol=atol)


@pytest.mark.parametrize("primitive,arguments,dtype,message", [
    ("BitwiseBinary", [5], "int32", "[BitwiseBinary] op must be 0..4"),
    ("BitwiseBinary", [0], "float32", "[BitwiseBinary] And takes integer or bool inputs; got float32"),
    ("BitwiseBinary", [3], "bool", "[BitwiseBinary] LeftShift takes integer inputs; got bool"),
    ("BitwiseInvert", [], "float32", "[BitwiseInvert] takes integer or bool inputs; got float32"),
    ("ArgReduce", [2, 0], "float32", "[ArgReduce] reduce type must be 0 (ArgMin) or 1 (ArgMax); got 2"),
    ("Sort", [3], "float32", "[Sort] axis must be a static int in [-1, 1); got 3"),
    ("Scan", [7, 0, False, True], "float32", "[Scan] scan type must be 0..4"),
    ("Scan", [4, 0, False, True], "int32", "[Scan] logcumsumexp needs a floating-point input; got int32"),
])
def test_unsupported_arguments(primitive: str, arguments: list[Any], dtype: str, message: str) -> None:
    n_inputs = 2 if primitive == "BitwiseBinary" else 1
    with pytest.raises(UnsupportedArgumentError) as err:
        lower_torch(_one_node(primitive, arguments, [((2,), dtype)] * n_inputs))
    assert str(err.value).startswith(message)


def _scripted_params() -> list[Any]:
    return [pytest.param(case, dtype, id=f"{case.primitive}-{case.id or 'base'}-{dtype}")
            for case in all_cases() if case.primitive in SCRIPTED for dtype in case.dtypes if dtype not in case.xfail]


@pytest.mark.parametrize("case,dtype", _scripted_params())
def test_scripted_matches_eager(case: OpCase, dtype: str) -> None:
    """Every parity case of these primitives scripts with torch.jit.script and runs as the fx module does."""
    inputs = (case.make or default_inputs)(np.random.default_rng(0), case.shapes[0], dtype)
    graph, _, _ = capture(case.fn, tuple(to_mx(a) for a in inputs), dynamic_axes=case.dynamic)
    try:
        eager = _run(graph, inputs, script=False)
    except UnsupportedPrimitiveError as err:
        pytest.skip(f"another primitive of the case has no torch translation: {err}")
    for e, s in zip(eager, _run(graph, inputs)):
        np.testing.assert_array_equal(s, e)

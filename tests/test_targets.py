"""The machinery both targets share: registry, lowering driver, argument parsers, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from mlxport.dtypes import numpy_dtype, numpy_dtype_of_onnx, onnx_dtype, onnx_dtype_of
from mlxport.errors import UnsupportedArgumentError, UnsupportedPrimitiveError
from mlxport.graph import Graph, Node, TensorInfo
from mlxport.targets import args, lowering
from mlxport.targets.registry import Registry


def _registry(version_name: str | None = "opset") -> Registry:
    return Registry("Test", __name__, (), version_name=version_name)


def _node(primitive: str, arguments: list, index: int = 0, inputs: tuple[str, ...] = ("x",)) -> Node:
    return Node(index, primitive, list(inputs), [f"y{index}"], arguments)


def test_duplicate_registration_raises() -> None:
    reg = _registry()
    reg.register("Abs")(lambda ctx, node: [])
    with pytest.raises(RuntimeError, match=r"Test translation for 'Abs' \(since opset 1\) is registered twice"):
        reg.register("Abs")(lambda ctx, node: [])


def test_lookup_takes_the_highest_since_not_above_the_version() -> None:
    reg = _registry()

    def old(ctx: object, node: object) -> list:
        """Old(x) -> old."""
        return []

    def new(ctx: object, node: object) -> list:
        return []

    reg.register("RMSNorm")(old)
    reg.register("RMSNorm", since=23)(new)
    assert reg.lookup("RMSNorm", 17).func is old
    assert reg.lookup("RMSNorm", 23).func is new
    assert reg.lookup("RMSNorm").func is new
    assert reg.lookup("Nope", 23) is None
    assert [r.since for r in reg.registrations()["RMSNorm"]] == [1, 23]
    assert reg.registrations()["RMSNorm"][0].doc == "Old(x) -> old."


def test_since_needs_a_versioned_target() -> None:
    with pytest.raises(TypeError, match="no versions"):
        _registry(None).register("Abs", since=18)


def test_unsupported_primitives_are_listed_once() -> None:
    x = TensorInfo("x", (2, 3), "float32")
    nodes = [_node("FFT", [], 0), _node("Abs", [], 1, ("y0",)), _node("FFT", [], 2, ("y1",))]
    tensors = {"x": x, **{f"y{i}": TensorInfo(f"y{i}", (2, 3), "float32") for i in range(3)}}
    graph = Graph(inputs=[x], outputs=[tensors["y2"]], nodes=nodes, constants={}, tensors=tensors,
                  output_sources={"y2": "y2"})
    reg = _registry()
    reg.register("Abs")(lambda ctx, node: [])
    with pytest.raises(UnsupportedPrimitiveError) as info:
        lowering.check_supported(graph, reg, 17)
    msg = info.value.message  # the text without the hint line
    assert msg.startswith("1 MLX primitive has no Test translation (target opset 17):\n  - FFT ×2"), msg
    assert "(first: node 0, inputs float32[2,3])" in msg
    assert msg.endswith("See `mlxport ops`; to add one, see docs/adding_ops.md.")


@pytest.mark.parametrize(("call", "message"), [
    (lambda: args.choice_arg(_node("Reduce", [9]), 9, args.REDUCE_KINDS),
     "[Reduce] reduce type must be 0..5 (And, Or, Sum, Prod, Min, Max); got 9"),
    (lambda: args.choice_arg(_node("ArgReduce", [2]), 2, args.ARG_REDUCE_KINDS),
     "[ArgReduce] reduce type must be 0 (ArgMin) or 1 (ArgMax); got 2"),
    (lambda: args.bitwise_args(_node("BitwiseBinary", [7]), "int32"),
     "[BitwiseBinary] op must be 0..4 (And, Or, Xor, LeftShift, RightShift); got 7"),
    (lambda: args.bitwise_args(_node("BitwiseBinary", [3]), "bool"),
     "[BitwiseBinary] LeftShift takes integer inputs; got bool"),
    (lambda: args.check_integer_or_bool(_node("BitwiseInvert", []), "float16"),
     "[BitwiseInvert] takes integer or bool inputs; got float16"),
    (lambda: args.rope_dims(_node("RoPE", [3])), "[RoPE] dims must be a static even number; got 3"),
    (lambda: args.check_conv_padding(_node("Convolution", []), [1, -1], [0, 0]),
     "[Convolution] padding must be non-negative (MLX slices negative padding away); got [1, -1], [0, 0]"),
])
def test_argument_errors_are_worded_once(call, message: str) -> None:
    with pytest.raises(UnsupportedArgumentError) as info:
        call()
    assert info.value.message == message


@pytest.mark.parametrize("name", ["bool", "uint8", "int32", "int64", "float16", "bfloat16", "float32", "float64"])
def test_dtype_round_trips(name: str) -> None:
    dtype = numpy_dtype(name)
    assert dtype.name == name
    assert onnx_dtype_of(dtype) == onnx_dtype(name)
    assert numpy_dtype_of_onnx(onnx_dtype(name)) == dtype


def test_unknown_dtypes_say_what_is_supported() -> None:
    with pytest.raises(UnsupportedArgumentError, match="complex64 has no ONNX equivalent; supported: bool"):
        onnx_dtype("complex64")
    with pytest.raises(TypeError, match="not a numpy or ml_dtypes type"):
        numpy_dtype("float7")
    assert np.zeros(2, numpy_dtype("bfloat16")).dtype.itemsize == 2


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (statically, at any depth in the file)."""
    import ast
    from pathlib import Path

    import mlxport

    root = Path(mlxport.__file__).parent.parent
    files = {}
    for f in (root / package.replace(".", "/")).rglob("*.py"):
        parts = f.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        here = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            edges[mod] |= {n for n in names if n in files and n != mod}
    return edges


def test_targets_have_no_import_cycle() -> None:
    edges = _import_graph("mlxport.targets")
    state: dict[str, int] = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in edges[mod]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path + [mod, dep])}"
            if dep not in state:
                visit(dep, path + [mod])
        state[mod] = 2

    for mod in edges:
        if mod not in state:
            visit(mod, [])
    torch_imports = {d for m, deps in edges.items() if m.startswith("mlxport.targets.torch") for d in deps}
    assert not any(d.startswith("mlxport.targets.onnx") for d in torch_imports), torch_imports

"""Every format in the table exports, inspects and validates from the command line, and every surface
(help texts, errors, docs/cli.md) lists exactly the table's suffixes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mlxport.formats import FORMATS, OPTION_FORMATS, Format, markdown_table, suffix_list

from .test_cli import MODEL, mlxport

REPO = Path(__file__).resolve().parents[2]
# LiteRT goes through onnx2tf in a child process and Core ML through coremltools: the slow ones.
SLOW = {".tflite", ".mlpackage"}


def _params() -> list:
    return [pytest.param(f, id=f.suffix.lstrip("."), marks=[pytest.mark.slow] if f.suffix in SLOW else [])
            for f in FORMATS]


@pytest.mark.parametrize("fmt", _params())
def test_export_inspect_validate_every_format(fmt: Format, tmp_path: Path) -> None:
    out = tmp_path / f"m{fmt.suffix}"
    args = ["export", MODEL, "--input", "x:2x16", "-o", str(out), "-q"]
    if fmt.dynamic_axes:
        args += ["--dynamic", "x:0=batch"]
    res = mlxport(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{fmt.name} export" in res.stdout

    res = mlxport("inspect", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{fmt.name} artifact" in res.stdout and "x: float32[" in res.stdout
    info = json.loads(mlxport("inspect", str(out), "--json", cwd=tmp_path).stdout)
    assert info["format"] == fmt.name and info["nodes"] > 0 if "nodes" in info else info["format"] == fmt.name
    assert info["sidecar"]["sha256_matches"] is True

    res = mlxport("validate", str(out), "--against", MODEL, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    if fmt.runs_here():
        assert ": OK" in res.stdout and "second sizes" in res.stdout or not fmt.dynamic_axes
    else:  # Core ML off macOS: structure checked, numbers need macOS
        assert "structure OK" in res.stdout and fmt.predicts_on_name in res.stdout


def test_validate_refuses_a_model_with_another_signature(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert mlxport("export", MODEL, "--input", "x:2x16", "-o", str(out), "-q", cwd=tmp_path).returncode == 0
    # Two arrays against an artifact with one input: refused before anything runs, both signatures named.
    res = mlxport("validate", str(out), "--against", "tests.cli.models:add_scaled", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "takes 1 input (x: float32[2,16])" in res.stderr and "takes 2 (a, b)" in res.stderr
    # Same arity, wrong width: MLX refuses the artifact's inputs, which is said as a signature mismatch.
    res = mlxport("validate", str(out), "--against", "tests.cli.models:build_wide", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "does not accept" in res.stderr and "x: float32[2,16]" in res.stderr and "Traceback" not in res.stderr


def test_forward_module_exports_from_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "f.onnx"
    res = mlxport("export", "tests.cli.models:build_forward", "--input", "x:2x16", "--dynamic", "x:0=batch",
                  "-o", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = mlxport("validate", str(out), "--against", "tests.cli.models:build_forward", cwd=tmp_path)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr


@pytest.mark.parametrize("flag, value", [("--opset", "17"), ("--external-data", None), ("--quantize", "float16"),
                                         ("--precision", "float16"), ("--no-optimize", None)])
def test_format_flags_are_refused_for_other_formats(flag: str, value: str | None, tmp_path: Path) -> None:
    option = {"--opset": "opset", "--external-data": "external_data", "--quantize": "quantize",
              "--precision": "precision", "--no-optimize": "optimize"}[flag]
    other = next(f for f in FORMATS if option not in f.options and f.suffix != ".mlpackage")
    args = ["export", MODEL, "--input", "x:2x16", "-o", str(tmp_path / f"m{other.suffix}"), flag]
    res = mlxport(*args + ([value] if value else []), cwd=tmp_path)
    takers = OPTION_FORMATS[option]
    assert res.returncode == 2
    assert f"{flag} applies to {', '.join(f.name for f in takers)} only" in res.stderr
    assert not (tmp_path / f"m{other.suffix}").exists()


def test_help_texts_list_the_table(tmp_path: Path) -> None:
    listing = suffix_list()
    assert listing in mlxport("--help", cwd=tmp_path).stdout.replace("and .mlpackage", "or .mlpackage")
    for command in ("export", "validate", "inspect", "bench", "registry", "serve"):
        help_text = " ".join(mlxport(command, *(["push"] if command == "registry" else []), "--help",
                                     cwd=tmp_path).stdout.split())
        for fmt in FORMATS:
            if command == "serve" and not fmt.runs_here() and fmt.suffix not in help_text:
                continue
            assert fmt.suffix in help_text, (command, fmt.suffix)


def test_docs_formats_table_is_generated() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    start = "<!-- formats table: generated from mlxport.formats.markdown_table() -->\n"
    end = "<!-- end of formats table -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0] == markdown_table(), (
        "docs/cli.md's formats table is out of date: paste mlxport.formats.markdown_table() between its markers")
    readme = (REPO / "README.md").read_text()
    for fmt in FORMATS:
        assert f"`{fmt.suffix}`" in readme, fmt.suffix


def test_import_mlxport_is_light() -> None:
    """`import mlxport` and `mlxport --help` load no MLX, ONNX, torch or numpy; serve.codec loads no MLX."""
    import subprocess

    heavy = ("mlx", "mlx.core", "onnx", "onnxruntime", "torch", "numpy")
    probe = ("import sys; {}; print(','.join(m for m in {!r} if m in sys.modules))")
    for code in ("import mlxport", "import mlxport.cli as c; c._usage()", "import mlxport.formats, mlxport.artifact"):
        out = subprocess.run([sys.executable, "-c", probe.format(code, heavy)], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "", (code, out)
    # Without MLX at all (blocked), the codec still imports.
    code = ("import sys; sys.modules['mlx'] = None; sys.modules['mlx.core'] = None; import mlxport.serve.codec; "
            "import mlxport; mlxport.__version__")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

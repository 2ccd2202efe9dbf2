"""Session fixtures of the LM tests: mlx-lm folders per architecture and their exports, built once and shared.

``lm_zoo.source(arch, bits)`` writes an mlx-lm folder (float32, or MLX 4-bit via mlx-lm's ``quantize_model``);
``lm_zoo.export(arch, variant)`` exports it with ``export_lm`` (variant "float", "q4" = the 4-bit folder as it is,
"int4" = the float folder quantized on export) and keeps the MLX model it came from for reference tokens.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.nn as nn
import pytest

from . import lmzoo

VARIANTS = ("float", "q4", "int4")


@dataclass
class Exported:
    """One export of a zoo folder and the MLX model it was made from."""

    arch: str
    variant: str
    source: Path
    folder: Path
    result: Any  # mlxport.lm.export.LMExport
    model: nn.Module  # cast or quantized the way the export saw it (export_lm converts in place)
    config: dict[str, Any]


class LMZoo:
    """Builds folders and exports on first use and hands out the same ones afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tokenizer: Path | None = None
        self._sources: dict[tuple[str, int | None, str], Path] = {}
        self._exports: dict[tuple[Any, ...], Exported] = {}
        self._runners: dict[tuple[Path, str], Any] = {}

    @property
    def tokenizer_dir(self) -> Path:
        if self._tokenizer is None:
            # `import this` prints the Zen of Python the first time; keep the test output clean.
            with contextlib.redirect_stdout(io.StringIO()):
                self._tokenizer = lmzoo.write_tokenizer(self.root / "tokenizer")
        return self._tokenizer

    def source(self, arch: str, bits: int | None = None, dtype: str = "float32") -> Path:
        key = (arch, bits, dtype)
        if key not in self._sources:
            out = self.root / f"src-{arch}-{dtype}{'' if bits is None else f'-q{bits}'}"
            with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints "[INFO] Quantized model with ..."
                self._sources[key] = lmzoo.write_folder(arch, out, self.tokenizer_dir, bits=bits, dtype=dtype)
        return self._sources[key]

    def export(self, arch: str, variant: str = "float", **options: Any) -> Exported:
        """Export ``arch`` in ``variant``; ``options`` go to export_lm (part of the cache key)."""
        from mlx_lm.utils import load

        from mlxport.lm.export import export_lm

        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
        key = (arch, variant, tuple(sorted(options.items())))
        if key not in self._exports:
            source = self.source(arch, 4 if variant == "q4" else None)
            model, tokenizer, config = load(str(source), return_config=True)
            suffix = "-".join(f"{k}={v}" for k, v in sorted(options.items()))
            folder = self.root / f"out-{arch}-{variant}{'-' + suffix if suffix else ''}"
            result = export_lm(model, tokenizer, folder, config=config, source_folder=source,
                               precision="int4" if variant == "int4" else "source", **options)
            self._exports[key] = Exported(arch, variant, source, folder, result, model, config)
        return self._exports[key]

    def runner(self, folder: Path, backend: str) -> Any:
        """One LMRunner per folder and backend."""
        from mlxport.lm.generate import LMRunner

        key = (folder, backend)
        if key not in self._runners:
            self._runners[key] = LMRunner(folder, backend=backend)
        return self._runners[key]


@pytest.fixture(scope="session")
def lm_zoo(tmp_path_factory: pytest.TempPathFactory) -> LMZoo:
    return LMZoo(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="session")
def llama(lm_zoo: LMZoo) -> Exported:
    """The fast representative: the float32 llama folder exported as it is."""
    return lm_zoo.export("llama", "float")

"""Quantized primitives: QuantizedMatmul, GatherQMM, GatherMM (packed weights stay packed)."""

from __future__ import annotations

"""Tiny models the CLI tests export by name (``tests.cli.models:NAME``)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(16, 8)
        self.l2 = nn.Linear(8, 4)

    def __call__(self, x: mx.array) -> mx.array:
        return self.l2(nn.relu(self.l1(x)))


def build_model() -> TinyMLP:
    """A zero-argument factory."""
    mx.random.seed(0)
    return TinyMLP()


def build_other() -> TinyMLP:
    """The same architecture with other weights (validation must fail)."""
    mx.random.seed(1)
    return TinyMLP()


mx.random.seed(0)
instance = TinyMLP()


def add_scaled(a: mx.array, b: mx.array) -> mx.array:
    """A plain function of two arrays."""
    return a + 2 * b


def two_outputs(x: mx.array) -> tuple[mx.array, mx.array]:
    return x * x, x + 1


def broken_factory() -> int:
    return 3


def build_wide() -> nn.Module:
    """Weights over 1 kB, so --external-data moves them to a side file."""
    mx.random.seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


class ForwardMLP(nn.Module):
    """Written PyTorch-style: ``forward`` and no ``__call__`` (the seed example's habit)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(16, 8)
        self.l2 = nn.Linear(8, 4)

    def forward(self, x: mx.array) -> mx.array:
        return self.l2(nn.relu(self.l1(x)))


def build_forward() -> ForwardMLP:
    mx.random.seed(0)
    return ForwardMLP()

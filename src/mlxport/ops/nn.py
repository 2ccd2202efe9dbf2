"""Neural-network primitives: convolution, pooling views, and the fused mx.fast ops."""

from __future__ import annotations

"""Indexing primitives: Gather, GatherAxis, Scatter, ScatterAxis, SliceUpdate, DynamicSlice."""

from __future__ import annotations

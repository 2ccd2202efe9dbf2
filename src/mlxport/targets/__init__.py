"""Lowering targets: one generic registry and driver, one package of translations per target.

- ``registry.py``: :class:`Registry`, the primitive-name -> translation table every target makes one of.
- ``lowering.py``: the driver (check every node has a translation, then translate node by node).
- ``args.py``: typed parsers of primitives' arguments, so each argument error is worded once.
- ``common.py``: target-neutral helpers (dimension arithmetic, IR patterns, MLX numeric tables).
- ``onnx/``, ``torch/``: each target's registry instance, context and translations by family.
"""

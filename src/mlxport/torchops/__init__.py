"""torch translations of MLX primitives, one module per family (see registry.py)."""

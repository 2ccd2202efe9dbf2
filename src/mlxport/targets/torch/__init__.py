"""The torch target: its registry and context (context.py), translations by family, strided windows (windows.py)."""

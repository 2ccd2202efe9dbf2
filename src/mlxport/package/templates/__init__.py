"""Files mlxport package copies into bundles (standalone scripts: they never import mlxport)."""

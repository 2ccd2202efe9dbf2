"""The MLflow ``python_function`` flavor of an mlxport artifact: ``predict`` runs ``mlxport.load(artifact)``.

The model is logged "from code" (no pickle): :data:`MODEL_CODE` is the file MLflow stores and runs to
build the model, so loading it (``mlflow models serve``, ``mlflow.pyfunc.load_model``) needs mlxport
installed. The artifact travels as the model artifact ``mlxport`` (the artifact file, its metadata file and
``lineage.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

ARTIFACT_KEY = "mlxport"
LINEAGE_FILE = "lineage.json"
MODEL_CODE = """\
# Written by `mlxport registry push`: MLflow runs this file to build the python_function model.
import mlflow
from mlxport.registry.pyfunc import MlxportModel

mlflow.models.set_model(MlxportModel())
"""


class MlxportModel(mlflow.pyfunc.PythonModel):
    """Runs an exported artifact with the mlxport runner its suffix names."""

    def load_context(self, context: Any) -> None:
        """Open the artifact that was logged with the model."""
        from ..runners import load

        folder = Path(context.artifacts[ARTIFACT_KEY])
        lineage = json.loads((folder / LINEAGE_FILE).read_text())
        self.runner = load(folder / lineage["artifact"])

    # No type hints on predict: MLflow reads them as a schema and wants list[...] there.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """Inputs by name (a dict), one array (one-input model) or a DataFrame; one output as an array, else a dict."""
        feed = to_feed(model_input, [i.name for i in self.runner.inputs])
        outputs = self.runner(**feed)
        if len(outputs) == 1:
            return outputs[0]
        return {spec.name: out for spec, out in zip(self.runner.outputs, outputs)}


def to_feed(model_input: Any, names: list[str]) -> dict[str, np.ndarray]:
    """The model's inputs by name from what MLflow's scoring server or a caller passes to ``predict``."""
    if isinstance(model_input, dict):
        return {k: np.asarray(v) for k, v in model_input.items()}
    if hasattr(model_input, "columns") and hasattr(model_input, "to_numpy"):  # a pandas DataFrame
        columns = [str(c) for c in model_input.columns]
        if set(names) <= set(columns):
            return {n: np.stack([np.asarray(v) for v in model_input[n].to_numpy()]) for n in names}
        if len(names) == 1:
            return {names[0]: model_input.to_numpy()}
        raise ValueError(f"the model has inputs {', '.join(names)}; a DataFrame must have one column per input "
                         f"(got columns {', '.join(columns)}); or send {{\"inputs\": {{name: array}}}}")
    if len(names) == 1:
        return {names[0]: np.asarray(model_input)}
    raise ValueError(f"the model has {len(names)} inputs ({', '.join(names)}); pass a dict of arrays by name, "
                     f"not a {type(model_input).__name__}")

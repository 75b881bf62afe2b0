"""MLflow "model from code" for a ganflow generator: weights are a plain state dict, no pickle. The model
ships with the gan_core package (MLflow's code_paths), so serving needs torch, numpy and pydantic only.

Two request forms:
* a request, one row per draw (a DataFrame; over HTTP `{"dataframe_records": [{"n": 16, "seed": 0}]}`):
  `n`, `seed`, optional `class` (a class name the version stores, e.g. "3" for digits) and optional
  `truncation` (> 0). Answer: the samples, as `ganflow sample` draws them for the same values;
* raw latents (an ndarray; over HTTP `{"inputs": z}`): (N, z_dim), or (N, z_dim + 1) for a conditional
  generator with the class id in the last column.
Images come back as (N, C, H, W) in [-1, 1], points as (N, d)."""
from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from gan_core.checkpoint import generator_from_state
from gan_core.sampling import SampleRequest, class_index, draw

REQUEST_FIELDS = ("n", "seed", "class", "truncation")


class GeneratorModel(PythonModel):
    def load_context(self, context):
        state = torch.load(context.artifacts["generator"], weights_only=True, map_location="cpu")
        self.generator = generator_from_state(state)

    # Annotated as a DataFrame, which MLflow neither validates nor warns about; raw latents arrive as an
    # ndarray and are accepted as well.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame) and "n" in model_input.columns:
            return np.concatenate([self._request(row) for row in model_input.to_dict("records")])
        z = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            if self.generator.num_classes:
                return self.generator(z[:, :-1], y=z[:, -1].long()).clamp(-1.0, 1.0).numpy()
            return self.generator(z).clamp(-1.0, 1.0).numpy()

    def _request(self, row: dict) -> np.ndarray:
        unknown = sorted(set(row) - set(REQUEST_FIELDS))
        if unknown:
            raise _bad(f"unknown request field(s) {unknown}; a request has {list(REQUEST_FIELDS)}")
        try:
            label = _given(row.get("class"))
            truncation = _given(row.get("truncation"))
            req = SampleRequest(n=int(row["n"]), seed=int(_given(row.get("seed")) or 0),
                                label=None if label is None else class_index(str(label), self.generator.class_names),
                                truncation=None if truncation is None else float(truncation))
            return draw(self.generator, req).numpy()
        except (TypeError, ValueError) as exc:
            raise _bad(str(exc)) from None


def _given(value):
    """None for an absent field (a missing DataFrame cell is NaN or None)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # HTTP 400 from `mlflow models serve`


mlflow.models.set_model(GeneratorModel())

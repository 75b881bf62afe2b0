"""MLflow "model from code" for a ganflow generator: weights are a plain state dict, no pickle. The model
ships with the gan_core package (MLflow's code_paths), so serving needs torch, numpy and pydantic only.

Two request forms:
* a request, one row per draw (a DataFrame; over HTTP `{"dataframe_records": [{"n": 16, "seed": 0}]}`):
  `n`, `seed`, optional `class` (a class name the version stores, e.g. "3" for digits) and optional
  `truncation` (> 0). Answer: the samples, as `ganflow sample` draws them for the same values;
* raw latents (an ndarray; over HTTP `{"inputs": z}`): (N, z_dim), or (N, z_dim + 1) for a conditional
  generator with the class id in the last column.
Images come back as (N, C, H, W) in [-1, 1], points as (N, d).

A request asks for at most GANFLOW_SERVE_MAX_N samples in all (read when the model loads; by default 4096,
fewer for large images: as many as make 2M values, e.g. 170 at 64x64 RGB): more is answered HTTP 400 at
once, before anything is drawn. Loading refuses a model whose code (this file,
the gan_core copy) differs from the hashes recorded when it was registered."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from gan_core import integrity
from gan_core.checkpoint import generator_from_state
from gan_core.sampling import SampleRequest, class_index, draw

REQUEST_FIELDS = ("n", "seed", "class", "truncation")
MAX_N = "GANFLOW_SERVE_MAX_N"
# `mlflow models serve` on 2 busy cores: digits (8x8) n=4096 answered in 2.9 s, 64x64 RGB n=256 (3.1M
# values, 76 MB of JSON) in 11.7 s and n=1024 in 57 s: near the server's 60 s timeout, after which the work
# goes on unanswered.
DEFAULT_MAX_N, DEFAULT_MAX_VALUES = 4096, 2 ** 21


class GeneratorModel(PythonModel):
    def load_context(self, context):
        _check_code(Path(context.artifacts["generator"]).parents[1])
        state = torch.load(context.artifacts["generator"], weights_only=True, map_location="cpu")
        self.generator = generator_from_state(state)
        self.max_n = _max_n(math.prod(state["data_shape"]))

    # Annotated as a DataFrame, which MLflow neither validates nor warns about; raw latents arrive as an
    # ndarray and are accepted as well.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame) and "n" in model_input.columns:
            requests = [self._request(row) for row in model_input.to_dict("records")]
            self._within_limit(sum(req.n for req in requests))  # all checked before any is drawn
            return np.concatenate([draw(self.generator, req).numpy() for req in requests])
        self._within_limit(len(model_input))
        z = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            if self.generator.num_classes:
                return self.generator(z[:, :-1], y=z[:, -1].long()).clamp(-1.0, 1.0).numpy()
            return self.generator(z).clamp(-1.0, 1.0).numpy()

    def _within_limit(self, n: int) -> None:
        if n > self.max_n:
            raise _bad(f"this request asks for {n} samples; this server answers at most {self.max_n} per "
                       f"request ({MAX_N}): split it into smaller requests")

    def _request(self, row: dict) -> SampleRequest:
        unknown = sorted(set(row) - set(REQUEST_FIELDS))
        if unknown:
            raise _bad(f"unknown request field(s) {unknown}; a request has {list(REQUEST_FIELDS)}")
        try:
            label = _given(row.get("class"))
            truncation = _given(row.get("truncation"))
            return SampleRequest(n=int(row["n"]), seed=int(_given(row.get("seed")) or 0),
                                 label=None if label is None else class_index(str(label), self.generator.class_names),
                                 truncation=None if truncation is None else float(truncation))
        except (TypeError, ValueError) as exc:
            raise _bad(str(exc)) from None


def _check_code(root: Path) -> None:
    """Refuse to serve code that changed after registration (a version registered before code hashes
    were recorded has no manifest, and loads as it is)."""
    manifest = root / "artifacts" / integrity.MANIFEST
    if not manifest.exists():
        return
    change = integrity.first_change(json.loads(manifest.read_text()), integrity.file_hashes(root))
    if change:
        raise MlflowException(f"this model's code is not the code it was registered with: {change} "
                              f"(in {root}); register the version again from its run instead of editing it")


def _max_n(values_per_sample: int) -> int:
    value = os.environ.get(MAX_N)
    if value is None:
        return max(1, min(DEFAULT_MAX_N, DEFAULT_MAX_VALUES // values_per_sample))
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise MlflowException(f"{MAX_N}={value!r}: the most samples one request may ask for must be a whole "
                              "number >= 1")
    return limit


def _given(value):
    """None for an absent field (a missing DataFrame cell is NaN or None)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # HTTP 400 from `mlflow models serve`


mlflow.models.set_model(GeneratorModel())

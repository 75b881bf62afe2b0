"""MLflow "model from code" for a ganflow generator: weights are a plain state dict, no pickle.

predict(z) takes latent vectors (N, z_dim) and returns samples: images (N, C, H, W) in [-1, 1] or
points (N, d). A class-conditional generator takes (N, z_dim + 1): the last column is the class id."""
from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from gan_core.checkpoint import generator_from_state


class GeneratorModel(PythonModel):
    def load_context(self, context):
        state = torch.load(context.artifacts["generator"], weights_only=True, map_location="cpu")
        self.generator = generator_from_state(state)

    def predict(self, context, model_input, params=None):
        z = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            if self.generator.num_classes:
                return self.generator(z[:, :-1], y=z[:, -1].long()).clamp(-1.0, 1.0).numpy()
            return self.generator(z).clamp(-1.0, 1.0).numpy()


mlflow.models.set_model(GeneratorModel())

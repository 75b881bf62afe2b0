"""A version registered before a refactor must still load and sample after it (issue 14).

The `registered` fixture (conftest.py) is tests/fixtures/registered_2026_11_29 is the artifact folder of a model version registered on
2026-11-29 by flows.registry.register (a tiny class-conditional DCGAN, 3 classes, z_dim 8): its logged
model code is the pyfunc file of that day, which imports gan_core. Its weights file (generator.pt) is not
committed: the fixture rebuilds the very weights that version was registered with (seed 0, every parameter
N(0, 0.5)) into a copy of the folder. Loading it with today's code and getting the recorded samples proves
old versions in a team's registry survive the move."""
from __future__ import annotations

import json

import numpy as np


def test_version_registered_before_the_refactor_loads_and_samples_identically(registered):
    import mlflow

    model = mlflow.pyfunc.load_model(str(registered))
    z = np.asarray(json.loads((registered / "input_example.json").read_text()), dtype=np.float32)
    out = model.predict(z)
    assert out.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(out, np.load(registered / "expected_output.npy"), rtol=0, atol=1e-6)


def test_its_weights_rebuild_through_gan_core(registered):
    import torch

    from gan_core.checkpoint import generator_from_state

    bundle = torch.load(registered / "artifacts" / "generator.pt", weights_only=True)
    G = generator_from_state(bundle)
    assert G.num_classes == 3

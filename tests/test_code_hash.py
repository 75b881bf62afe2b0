"""A version whose logged code changed after registration (issue 25, item 7) is refused by the gate's
check and by the pyfunc when it loads: the artifact store's own files, read through MLflow, are hashed."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from test_promote import empty_store, make_version, ring8_params, store  # noqa: F401 - fixtures


def _model_folder(name: str, version: str) -> Path:
    """The version's logged model folder in the local artifact store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    source = client.get_model_version(name, version).source  # models:/m-<id>
    return Path(unquote(urlparse(client.get_logged_model(source.split("/")[-1]).artifact_location).path))


def test_code_changed_after_registration_is_refused_by_the_gate_and_at_load(store, one_thread, monkeypatch):
    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flows.registry.versions import CODE_HASH_TAG, check_code

    p = ring8_params()
    good, tampered = make_version(store, p, 0.1), make_version(store, p, 0.1)
    assert len(MlflowClient().get_model_version(p.model_name, good).tags[CODE_HASH_TAG]) == 64
    assert check_code(p.model_name, good) is None
    monkeypatch.setenv("GANFLOW_SERVE_MAX_N", "3")  # the serving cap holds for raw latents too
    model = mlflow.pyfunc.load_model(f"models:/{p.model_name}/{good}")  # untouched: its own check passes
    assert model.predict(np.zeros((3, 32), dtype=np.float32)).shape == (3, 2)
    with pytest.raises(MlflowException, match="asks for 4 samples; this server answers at most 3"):
        model.predict(np.zeros((4, 32), dtype=np.float32))
    monkeypatch.setenv("GANFLOW_SERVE_MAX_N", "many")
    with pytest.raises(MlflowException, match="GANFLOW_SERVE_MAX_N='many'"):
        mlflow.pyfunc.load_model(f"models:/{p.model_name}/{good}")
    monkeypatch.delenv("GANFLOW_SERVE_MAX_N")

    sampling = _model_folder(p.model_name, tampered) / "code" / "gan_core" / "sampling.py"
    sampling.write_text(sampling.read_text() + "\nimport os  # a change after registration\n")
    reason = check_code(p.model_name, tampered)
    assert reason and "code/gan_core/sampling.py changed" in reason, reason
    with pytest.raises(MlflowException, match="not the code it was registered with: code/gan_core/sampling.py changed"):
        mlflow.pyfunc.load_model(f"models:/{p.model_name}/{tampered}")
    # The manifest rewritten to match: the version's tag, in the registry, still tells.
    from gan_core import integrity

    folder = _model_folder(p.model_name, tampered)
    (folder / "artifacts" / integrity.MANIFEST).write_text(json.dumps(integrity.file_hashes(folder)))
    assert "no longer match the code hash recorded then" in (check_code(p.model_name, tampered) or "")

    assert check_code(p.model_name, good) is None  # one version's change is its own
    (_model_folder(p.model_name, good) / "code" / "gan_core" / "extra.py").write_text("x = 1\n")
    assert "code/gan_core/extra.py was added" in (check_code(p.model_name, good) or "")


def test_a_version_registered_before_code_hashes_is_accepted(store, one_thread):
    from mlflow.tracking import MlflowClient

    from flows.registry.versions import CODE_HASH_TAG, check_code

    p = ring8_params()
    version = make_version(store, p, 0.1)
    client = MlflowClient()
    client.delete_model_version_tag(p.model_name, version, CODE_HASH_TAG)  # as an older ganflow left it
    (_model_folder(p.model_name, version) / "pyfunc.py").write_text("# anything\n")
    assert check_code(p.model_name, version) is None

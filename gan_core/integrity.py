"""The code a registered version runs when served: its pyfunc file and the copy of this package shipped
with it. Hashed at registration; the promotion gate and the pyfunc's load_context compare the logged
files with those hashes, so a version whose code changed afterwards is refused."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

MODEL_FILE = "pyfunc.py"  # the model-from-code file, at the logged model's root
CODE_DIR = "code"  # MLflow's code_paths copy (code/gan_core/...)
MANIFEST = "code_hashes.json"  # {relative path: sha256} of the files above, in the model's artifacts/


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of the model file and of every file under code/, by path relative to the model's root.
    __pycache__ is left out: importing the code writes it there (MLflow's logged copy has none)."""
    files = [root / MODEL_FILE, *(p for p in (root / CODE_DIR).rglob("*")
                                  if p.is_file() and "__pycache__" not in p.relative_to(root).parts)]
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(files) if p.is_file()}


def digest(hashes: Mapping[str, str]) -> str:
    """One hash over all the files: the version's `code_hash` tag."""
    return hashlib.sha256(json.dumps(dict(hashes), sort_keys=True).encode()).hexdigest()


def first_change(recorded: Mapping[str, str], found: Mapping[str, str]) -> str | None:
    """The first file that differs, in words (changed, missing or added); None when they all match."""
    for path in sorted(set(recorded) | set(found)):
        if path not in found:
            return f"{path} is missing"
        if path not in recorded:
            return f"{path} was added"
        if recorded[path] != found[path]:
            return f"{path} changed"
    return None

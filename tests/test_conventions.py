"""One owner per convention (issue 28): the prepared data's file names are spelled in flows/data/load.py only,
the run directory's in flows/env.py, and every other module of the product and of bench asks them."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWNED = {  # a file or folder name -> the one module allowed to spell it in a string
    "manifest.json": "flows/data/load.py",
    "classifier.json": "flows/data/load.py",
    "classifier.pt": "flows/data/load.py",
    "data/processed": "flows/data/load.py",
    "data/classifier": "flows/data/load.py",
    ".ganflow": "flows/env.py",
    "last_pipeline.json": "flows/env.py",
}


def _code(path: Path) -> str:
    """The file without docstrings and comments: a reader may be told a file's name, code may not spell it."""
    text = re.sub(r'""".*?"""', "", path.read_text(), flags=re.S)
    return "\n".join(line.split("  #")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_file_names_have_one_owner():
    spelled: dict[str, set[str]] = {name: set() for name in OWNED}
    for folder in ("gan_core", "flows", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            code = _code(path)
            for name in OWNED:
                # The name as a whole path part: `.ganflow-import-` (the importer's staging prefix) is another.
                if re.search(rf"""["'](?:[^"'\n]*/)?{re.escape(name)}(?:/[^"'\n]*)?["']""", code):
                    spelled[name].add(str(path.relative_to(ROOT)))
    others = {name: sorted(where - {OWNED[name]}) for name, where in spelled.items() if where - {OWNED[name]}}
    assert not others, f"spelled outside their owner (ask flows/data/load.py): {others}"

"""`ganflow prepare --source`'s import into data/raw (flows/data/importer.py): the zip checks on in-memory-built
archives, all-or-nothing replacement, symlinks left out, DVC tracking stubs. No subprocess: the CLI and DVC
side is in test_prepare_integration.py."""
from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import yaml

from flows.data import importer
from flows.errors import UserError

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # the checks read the archive's structure, not the images


def _zip(members: dict[str, bytes] | list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name, which one test writes
        for name, data in members.items() if isinstance(members, dict) else members:
            zf.writestr(name, data)
    return buf.getvalue()


def _central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory's file headers."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        start = zf.start_dir
    out, at = [], data.find(zipfile.stringCentralDir, start)
    while at != -1:
        out.append(at)
        at = data.find(zipfile.stringCentralDir, at + 1)
    return out


def _write(tmp_path: Path, data: bytes, name: str = "set.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_well_formed_zip_passes(tmp_path):
    importer.check_zip(_write(tmp_path, _zip({f"c/{i}.png": PNG for i in range(5)})))


def test_a_zip_with_more_members_than_the_budget_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "MAX_IMPORT_FILES", 4)
    importer.check_zip(_write(tmp_path, _zip({f"{i}.png": PNG for i in range(4)}), "four.zip"))
    with pytest.raises(UserError, match=r"five\.zip has 5 entries, over the import budget of 4"):
        importer.check_zip(_write(tmp_path, _zip({f"{i}.png": PNG for i in range(5)}), "five.zip"))


def test_a_zip_that_inflates_beyond_the_budget_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "MAX_IMPORT_BYTES", 10_000)
    path = _write(tmp_path, _zip({"a.png": b"\x00" * 6_000, "b.png": b"\x00" * 6_000}))
    assert path.stat().st_size < 1_000  # each member is far below any per-member cap; together too much
    with pytest.raises(UserError, match=r"inflates to 12000 bytes, over the import budget of 10000"):
        importer.check_zip(path)


def test_a_zip_with_a_name_twice_is_refused(tmp_path):
    path = _write(tmp_path, _zip([("c/a.png", PNG), ("c\\a.png", PNG + b"x")]))  # one name to the loader
    with pytest.raises(UserError, match=r"1 names that appear more than once \(e\.g\. 'c/a\.png'\)"):
        importer.check_zip(path)


def test_a_zip_whose_entries_share_compressed_data_is_refused(tmp_path):
    """The overlapping-entry bomb: a second central-directory entry points at the first one's local header,
    so one compressed kernel inflates once per entry."""
    data = bytearray(_zip({"a.png": b"\x00" * 5_000, "b.png": b"\x00" * 5_000}))
    second = _central_entries(bytes(data))[1]
    data[second + 42:second + 46] = struct.pack("<L", 0)  # its local header offset: the first entry's
    path = _write(tmp_path, bytes(data))
    with zipfile.ZipFile(path) as zf:  # zipfile itself would inflate both from the one kernel
        assert [i.header_offset for i in zf.infolist()] == [0, 0]
    with pytest.raises(UserError, match=r"entries 'a\.png' and 'b\.png' overlap"):
        importer.check_zip(path)


def test_a_zip_entry_that_runs_into_the_directory_is_refused(tmp_path):
    data = bytearray(_zip({"a.png": PNG, "b.png": PNG}, zipfile.ZIP_STORED))
    last = _central_entries(bytes(data))[-1]
    data[last + 20:last + 24] = struct.pack("<L", 10_000)  # its compressed size, as the directory says
    with pytest.raises(UserError, match=r"entry 'b\.png' runs into the archive's directory"):
        importer.check_zip(_write(tmp_path, bytes(data)))


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _leftovers(ws: Path) -> list[str]:
    return [p.name for p in (ws / "data/raw").iterdir() if p.name.startswith(importer.STAGING)]


def test_a_failed_import_leaves_the_previous_one_as_it_was(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    first = {"dark/0.png": PNG, "dark/1.png": PNG + b"1", "light/0.png": PNG + b"2"}
    src = _folder(tmp_path / "one" / "shapes", first)
    assert importer.import_source(src, ws) == "data/raw/shapes"
    assert _files(ws / "data/raw/shapes") == first
    assert yaml.safe_load((ws / "data/raw/shapes.dvc").read_text()) == {"outs": [{"path": "shapes"}]}

    # A second folder of the same name, over the budget at its third file: refused mid-copy.
    monkeypatch.setattr(importer, "MAX_IMPORT_FILES", 2)
    bigger = _folder(tmp_path / "two" / "shapes", {f"dark/{i}.png": PNG * (i + 2) for i in range(3)})
    with pytest.raises(UserError, match=r"over the import budget \(2 files.*the previous import is kept"):
        importer.import_source(bigger, ws)
    assert _files(ws / "data/raw/shapes") == first and not _leftovers(ws)

    # A zip after a good one: the bad one (overlapping entries) is refused after its copy, the good one kept.
    good = _zip({"a.png": b"\x00" * 500, "b.png": b"\x00" * 500})
    _write(tmp_path, good)
    importer.import_source(tmp_path / "set.zip", ws)
    bad = bytearray(good)
    second = _central_entries(good)[1]
    bad[second + 42:second + 46] = struct.pack("<L", 0)
    _write(tmp_path, bytes(bad))
    with pytest.raises(UserError, match="overlap"):
        importer.import_source(tmp_path / "set.zip", ws)
    assert (ws / "data/raw/set.zip").read_bytes() == good and not _leftovers(ws)

    # Within the budget, the new folder replaces the old one whole: no file of the first remains, nor what
    # a crashed import left behind.
    monkeypatch.setattr(importer, "MAX_IMPORT_FILES", 3)
    _folder(ws / "data/raw" / f"{importer.STAGING}crashed", {"previous/0.png": PNG})
    importer.import_source(bigger, ws)
    assert _files(ws / "data/raw/shapes") == _files(bigger) and not _leftovers(ws)


def test_symlinks_and_fifos_are_left_out_of_an_import(tmp_path, capsys):
    ws = tmp_path / "ws"
    (tmp_path / "secret.png").write_bytes(PNG)
    src = _folder(tmp_path / "imgs", {"a.png": PNG})
    os.symlink(tmp_path / "secret.png", src / "link.png")  # DVC would cache and push what it points to
    os.symlink(tmp_path, src / "linkdir")
    os.mkfifo(src / "fifo.png")
    importer.import_source(src, ws)
    assert sorted(p.name for p in (ws / "data/raw/imgs").iterdir()) == ["a.png"]
    out = capsys.readouterr().out
    for name, why in (("link.png", "symlink"), ("linkdir", "symlink"), ("fifo.png", "not a regular file")):
        assert f"  not imported: {src / name} ({why})\n" in out


def test_a_source_inside_data_raw_is_tracked_where_it_is(tmp_path):
    ws = tmp_path / "ws"
    _folder(ws / "data/raw/mine/sub", {"a.png": PNG})
    assert importer.import_source(ws / "data/raw/mine/sub", ws) == "data/raw/mine/sub"
    assert (ws / "data/raw/mine.dvc").exists() and not (ws / "data/raw/mine/sub.dvc").exists()
    os.symlink(tmp_path, ws / "data/raw/mine/out")
    (ws / "data/raw/mine.dvc").unlink()
    with pytest.raises(UserError, match=r"holds 1 symlinks .* which DVC would follow"):
        importer.import_source(ws / "data/raw/mine", ws)
    with pytest.raises(UserError, match="is data/raw itself"):
        importer.import_source(ws / "data/raw", ws)
    with pytest.raises(UserError, match="holds .*data/raw, where imports are copied to"):
        importer.import_source(ws, ws)


def test_a_tracked_import_deleted_by_hand_stops_the_data_stages_with_what_to_do(tmp_path):
    from flows.data import dvc
    from flows.env import RunPaths

    ws = tmp_path / "ws"
    importer.import_source(_folder(tmp_path / "shapes", {"a.png": PNG}), ws)
    (ws / "dvc.yaml").write_bytes((Path(__file__).parents[1] / "dvc.yaml").read_bytes())
    importer.check_imports_present(ws)
    (ws / "data/raw/shapes/a.png").unlink()
    (ws / "data/raw/shapes").rmdir()
    with pytest.raises(UserError, match=r"data/raw/shapes is missing, and data/raw/shapes\.dvc tracks it: "
                                         r"`dvc pull data/raw/shapes\.dvc` brings it back"):
        dvc.repro(RunPaths(ws, ws / ".ganflow"), push=False)  # refused before DVC runs

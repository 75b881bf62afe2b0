"""Importing a user's image folder or zip into data/raw/, where DVC versions and pushes it.

An import is all or nothing: it is copied into a staging folder beside its target, checked, and only then
swapped in, so a failed import (a copy error, a zip over the budget) leaves the previous one as it was.
Each import is a DVC data source of its own (`data/raw/<name>.dvc`, as `dvc add` writes it): `dvc repro`
caches it, `dvc push` sends it to the remote with the prepared data, and `dvc pull` brings it back."""
from __future__ import annotations

import os
import shutil
import stat
import struct
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import yaml

from flows.errors import UserError

RAW = Path("data") / "raw"
# The import budget: what one import may hold (zip members and their inflated sizes, or a folder's files).
# zip bombs inflate far beyond their size; a folder is copied into data/raw and again into DVC's cache.
MAX_IMPORT_FILES = 100_000
MAX_IMPORT_BYTES = 4 * 2**30
STAGING = ".ganflow-import-"  # staging folders in data/raw: .dvcignore'd, so a crash's leftover is no data


def dataset_name(source: Path) -> str:
    return source.name.removesuffix(".zip") or "images"


def import_source(source: Path, workspace: Path) -> str:
    """Import an image folder/zip into data/raw/ and track it with DVC; returns the path for params.yaml."""
    source = source.expanduser().resolve()
    raw = workspace / RAW
    if not source.exists():
        raise UserError(f"--source {source} does not exist")
    if source.is_relative_to(raw):
        return _track_in_place(source, workspace)
    if not (source.is_dir() or source.suffix.lower() == ".zip"):
        raise UserError(f"--source {source} must be a folder or a .zip of PNG/JPEG images")
    if raw.is_relative_to(source):
        raise UserError(f"--source {source} holds {raw}, where imports are copied to: name the image folder itself")
    raw.mkdir(parents=True, exist_ok=True)
    for leftover in raw.glob(f"{STAGING}*"):  # a crashed import's (its previous import is in the DVC remote)
        shutil.rmtree(leftover, ignore_errors=True)
    dest = raw / source.name
    staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=raw))
    try:
        new = staging / source.name
        if source.is_dir():
            _copy_folder(source, new)
        else:
            shutil.copy2(source, new)
            check_zip(new, shown=source)  # the copy that is kept is the one checked
        _swap(new, dest, staging / "previous")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    track(dest)
    return str(dest.relative_to(workspace))


def _track_in_place(source: Path, workspace: Path) -> str:
    """A source already in data/raw is tracked where it is: the top-level folder or zip it lies in."""
    rel = source.relative_to(workspace / RAW)
    if not rel.parts:
        raise UserError(f"--source {source} is data/raw itself: name a folder or zip inside it")
    top = workspace / RAW / rel.parts[0]
    if top.is_dir():
        links = [p for p in top.rglob("*") if p.is_symlink()]
        if links:
            # DVC would store (and push) what they point to, and replace the links by copies.
            raise UserError(f"{top} holds {len(links)} symlinks (e.g. {links[0]}), which DVC would follow: "
                            "remove them, or import the folder from outside data/raw (links are left out)")
    elif zipfile.is_zipfile(top):
        check_zip(top)
    track(top)
    return str(source.relative_to(workspace))


def track(entry: Path) -> None:
    """Make `entry` (a folder or zip in data/raw) a DVC data source. The stub names it only: `dvc repro`
    (run next) hashes it, caches it and completes the file, as it does whenever the entry changes."""
    dvcfile = entry.with_name(f"{entry.name}.dvc")
    if not dvcfile.exists():
        dvcfile.write_text(yaml.safe_dump({"outs": [{"path": entry.name}]}, sort_keys=False))


def check_imports_present(workspace: Path) -> None:
    """An import deleted by hand while its .dvc file stays: `dvc repro` would stop on it ("missing data
    'source'"), whatever dataset the run uses. Say what to do instead."""
    for dvcfile in sorted((workspace / RAW).glob("*.dvc")):
        entry = dvcfile.with_suffix("")  # `dvc add`'s naming: data/raw/<name>.dvc tracks data/raw/<name>
        if not os.path.lexists(entry):
            rel = dvcfile.relative_to(workspace)
            raise UserError(f"{entry.relative_to(workspace)} is missing, and {rel} tracks it: `dvc pull {rel}` "
                            f"brings it back, `dvc remove {rel}` drops the import")


def _swap(new: Path, dest: Path, previous: Path) -> None:
    """Put `new` at `dest`; the previous import goes to `previous` (in the staging folder, removed after)."""
    if os.path.lexists(dest):
        os.replace(dest, previous)
    try:
        os.replace(new, dest)
    except OSError:
        if os.path.lexists(previous):
            os.replace(previous, dest)
        raise


class _FolderBudget:
    """copytree's copy function: copies a file unless it would take the import over the budget."""

    def __init__(self, source: Path):
        self.source, self.files, self.bytes = source, 0, 0

    def __call__(self, src: str, dst: str) -> None:
        self.files += 1
        self.bytes += os.lstat(src).st_size
        if self.files > MAX_IMPORT_FILES or self.bytes > MAX_IMPORT_BYTES:
            raise UserError(f"--source {self.source} is over the import budget ({MAX_IMPORT_FILES} files, "
                            f"{MAX_IMPORT_BYTES} bytes): nothing imported, the previous import is kept")
        shutil.copy2(src, dst)


def _copy_folder(source: Path, dest: Path) -> None:
    try:
        shutil.copytree(source, dest, ignore=_not_copied, copy_function=_FolderBudget(source))
    except shutil.Error as exc:
        failures = exc.args[0] if isinstance(exc.args[0], list) else [(str(source), "", str(exc.args[0]))]
        src, _, why = failures[0]
        raise UserError(f"--source {source}: {len(failures)} files could not be copied (first: {src}: {why}): "
                        "nothing imported, the previous import is kept") from None


def _not_copied(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: only regular files and folders are imported. FIFOs, sockets, devices cannot be
    copied (a FIFO blocks) nor versioned; DVC would follow a symlink and store what it points to."""
    left_out = []
    for n in names:
        try:
            mode = stat.S_IFMT(os.lstat(os.path.join(folder, n)).st_mode)
        except OSError as exc:  # gone or unreadable since the folder was listed
            mode, why = None, f"unreadable: {exc.strerror or exc}"
        else:
            why = "symlink" if mode == stat.S_IFLNK else "not a regular file"
        if mode not in (stat.S_IFREG, stat.S_IFDIR):
            left_out.append(n)
            print(f"  not imported: {os.path.join(folder, n)} ({why})")
    return left_out


def check_zip(path: Path, shown: Path | None = None) -> None:
    """Refuse a zip over the import budget, with two entries of one name, or whose entries overlap (a zip
    bomb whose entries share compressed data inflates far beyond any per-member cap). Errors name `shown`."""
    shown = shown or path
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_IMPORT_FILES:
                raise UserError(f"{shown} has {len(infos)} entries, over the import budget of {MAX_IMPORT_FILES}")
            inflated = sum(i.file_size for i in infos)
            if inflated > MAX_IMPORT_BYTES:
                raise UserError(f"{shown} inflates to {inflated} bytes, over the import budget of "
                                f"{MAX_IMPORT_BYTES}")
            names = Counter(i.filename.replace("\\", "/") for i in infos)  # as the loader reads them
            twice = [n for n, k in names.items() if k > 1]
            if twice:
                raise UserError(f"{shown} has {len(twice)} names that appear more than once (e.g. {twice[0]!r}): "
                                "which one is the image is ambiguous")
            with open(path, "rb") as fh:
                _check_no_overlap(fh, infos, zf.start_dir, shown)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{shown} is not a readable zip archive: {exc}") from None


def _check_no_overlap(fh, infos: list[zipfile.ZipInfo], central_dir: int, shown: Path) -> None:
    """Each entry's bytes (local header, name, extra field, compressed data) lie apart from every other's
    and before the central directory."""
    spans = []
    for info in infos:
        fh.seek(info.header_offset)
        header = fh.read(zipfile.sizeFileHeader)
        if len(header) < zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
            continue  # no readable entry there: the loader skips it as unreadable, nothing inflates
        fields = struct.unpack(zipfile.structFileHeader, header)
        extent = (zipfile.sizeFileHeader + fields[zipfile._FH_FILENAME_LENGTH]
                  + fields[zipfile._FH_EXTRA_FIELD_LENGTH] + info.compress_size)
        spans.append((info.header_offset, info.header_offset + extent, info.filename))
    spans.sort()
    for (_, end, name), (start, _, other) in zip(spans, spans[1:]):
        if start < end:
            raise UserError(f"{shown}: entries {name!r} and {other!r} overlap (they share compressed data, "
                            "as zip bombs do): refused")
    if spans and spans[-1][1] > central_dir:
        raise UserError(f"{shown}: entry {spans[-1][2]!r} runs into the archive's directory (a zip bomb's "
                        "trick): refused")

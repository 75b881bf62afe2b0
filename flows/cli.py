"""`ganflow`: the command line. User mistakes print one clear message and exit 2, no traceback."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from flows.env import configure
from flows.errors import TrainingFailed, UserError

app = typer.Typer(help="Train GANs and WGANs: DVC data, Ray Train, MLflow registry, Prefect flows.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
stage_app = typer.Typer(help="DVC stage commands (dvc.yaml runs these).", no_args_is_help=True)
app.add_typer(stage_app, name="stage")

Workspace = typer.Option(Path("."), "--workspace", "-w", help="folder with params.yaml and dvc.yaml")
Sets = typer.Option(None, "--set", "-s", help="KEY=VALUE written into params.yaml first (e.g. train.epochs=5)")


@app.command()
def pipeline(workspace: Path = Workspace, set_: Optional[List[str]] = Sets,
             new_run: bool = typer.Option(False, "--new-run", help="start a new training run instead of resuming")):
    """Run the whole pipeline as a Prefect flow: prepare -> train -> evaluate -> register."""
    paths = configure(workspace)
    from flows import params

    params.write_overrides(paths.workspace, set_ or [])
    from flows.pipeline import pipeline as flow

    started = time.perf_counter()
    summary = flow(str(paths.workspace), new_run=new_run)
    _print_summary(summary, paths, time.perf_counter() - started)


def _print_summary(s: dict, paths, wall: float) -> None:
    from flows.evaluate import headline

    bindir = Path(sys.executable).parent
    print(f"\nRegistered {s['model_name']} version {s['version']}: {s['model_uri']}  ({wall:.0f} s)")
    print(f"  {headline(s['metrics'])}")
    print(f"  stage times (s): {s['timings_s']}; data version {s['data_version']}; "
          f"{s['epochs']} epochs (resumed from {s['resumed_from_epoch']})")
    print(f"  samples and curves: {s['images']}")
    print(f"  MLflow UI:   {bindir}/mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']} "
          f"--host 127.0.0.1 --port 5000   (open http://127.0.0.1:5000, run {s['mlflow_run_id']})")
    print(f"  Prefect UI:  PREFECT_HOME={os.environ['PREFECT_HOME']} {bindir}/prefect server start --host 127.0.0.1")
    print(f"  sample it:   {bindir}/ganflow sample --model {s['model_uri']} -n 64 --out samples.png")


@app.command()
def prepare(workspace: Path = Workspace,
            source: Optional[Path] = typer.Option(None, help="folder or .zip of PNG/JPEG images (default: bundled digits)"),
            name: Optional[str] = typer.Option(None, help="dataset name (default: the source's name)"),
            image_size: Optional[int] = typer.Option(None, help="8, 16, 32 or 64"),
            channels: Optional[int] = typer.Option(None, help="1 (grayscale) or 3 (RGB)")):
    """Prepare the dataset under DVC (import --source into data/raw first)."""
    paths = configure(workspace)
    from flows import dvc, params

    sets = []
    if source is not None:
        sets += [f"data.source={import_source(source, paths.workspace)}", f"data.name={name or _stem(source)}"]
    elif name:
        sets.append(f"data.name={name}")
    sets += [f"data.image_size={image_size}"] * (image_size is not None)
    sets += [f"data.channels={channels}"] * (channels is not None)
    params.write_overrides(paths.workspace, sets)
    print(f"data version {dvc.repro(paths)}")


def _stem(source: Path) -> str:
    return source.name.removesuffix(".zip") or "images"


def import_source(source: Path, workspace: Path) -> str:
    """Copy an image folder/zip into data/raw/ so DVC versions it; returns the path for params.yaml."""
    source = source.expanduser().resolve()
    raw = workspace / "data" / "raw"
    if not source.exists():
        raise UserError(f"--source {source} does not exist")
    if source.is_relative_to(raw):
        return str(source.relative_to(workspace))
    if not (source.is_dir() or source.suffix.lower() == ".zip"):
        raise UserError(f"--source {source} must be a folder or a .zip of PNG/JPEG images")
    dest = raw / source.name
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    raw.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        # symlinks=True copies links as links; the loader skips them, so nothing outside is read.
        shutil.copytree(source, dest, symlinks=True)
    else:
        shutil.copy2(source, dest)
    return str(dest.relative_to(workspace))


@stage_app.command("prepare")
def stage_prepare(workspace: Path = Workspace):
    """Build data/processed from params.yaml's data section."""
    from flows import params, stages

    ws = workspace.resolve()
    stages.prepare(params.load(ws), ws)


@stage_app.command("classifier")
def stage_classifier(workspace: Path = Workspace):
    """Train the dataset's classifier (feature extractor for evaluation)."""
    from flows import params, stages

    ws = workspace.resolve()
    stages.train_classifier(params.load(ws), ws)


@app.command()
def sample(model: str = typer.Option(..., help="model URI, e.g. models:/ganflow-digits/1"),
           n: int = typer.Option(64, "-n", min=1, help="number of samples"),
           out: Path = typer.Option(..., help="output file: .png (image grid) or .npy (array)"),
           seed: int = typer.Option(0), workspace: Path = Workspace):
    """Write N samples from a registered generator."""
    configure(workspace)
    from flows.evaluate import sample as draw
    from flows.registry import load_generator
    from gan_core.images import save_grid_png, save_scatter_png

    if out.suffix not in (".png", ".npy"):
        raise UserError(f"--out must end in .png or .npy, got {out.name!r}")
    samples = draw(load_generator(model), n, seed)
    if out.suffix == ".npy":
        import numpy as np

        np.save(out, samples.numpy())
    elif samples.dim() == 4:
        save_grid_png(samples, out)
    else:
        save_scatter_png(samples.numpy(), out)
    print(f"wrote {n} samples to {out}")


def main() -> None:
    try:
        app()
    except UserError as exc:
        print(f"ganflow: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingFailed as exc:
        print(f"ganflow: {exc}\n  (the MLflow run is marked FAILED with the reason; nothing was registered)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

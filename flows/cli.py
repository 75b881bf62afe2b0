"""`ganflow`: the command line. User mistakes print one clear message and exit 2, no traceback."""
from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from flows import servers, watchdog
from flows.env import configure, hold_workspace, reap_children, record_children
from flows.errors import TrainingFailed, UserError
from gan_core.sizes import ACCEPTED_SIZES_TEXT

app = typer.Typer(help="Train GANs and WGANs: DVC data, Ray Train, MLflow registry, Prefect flows.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
stage_app = typer.Typer(help="DVC stage commands (dvc.yaml runs these).", no_args_is_help=True)
app.add_typer(stage_app, name="stage")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version
        print(f"ganflow {version('ganflow')}")
        raise typer.Exit()


@app.callback()
def _top(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="print ganflow's version and exit")) -> None:
    """Train GANs and WGANs: DVC data, Ray Train, MLflow registry, Prefect flows."""


Workspace = typer.Option(Path("."), "--workspace", "-w", help="folder with params.yaml and dvc.yaml")
Sets = typer.Option(None, "--set", "-s", help="KEY=VALUE for this run only, laid over params.yaml (e.g. "
                    "train.epochs=5); params.yaml is not changed: edit it to make a change permanent")


@app.command()
def pipeline(workspace: Path = Workspace, set_: Optional[List[str]] = Sets,
             new_run: bool = typer.Option(False, "--new-run", help="start a new training run instead of resuming"),
             continue_: bool = typer.Option(False, "--continue", help="extend the finished run of these settings to "
                                            "train.epochs from its last checkpoint (optimisers, EMA, RNG); the lr "
                                            "holds where its schedule ended"),
             init_from: Optional[str] = typer.Option(None, "--init-from", help="start from a registered version's "
                                                     "G, D and optimiser states, e.g. models:/ganflow-digits@champion "
                                                     "(same model and data shape; other data is transfer learning)"),
             finish: bool = typer.Option(False, "--finish", help="train no further: register the best kept "
                                         "checkpoint (by the validation probe) of the run of these settings that "
                                         "was stopped (Ctrl-C), through evaluation and the gate")):
    """Run the whole pipeline as a Prefect flow: prepare -> train -> evaluate -> register -> promote."""
    if new_run + continue_ + (init_from is not None) + finish > 1:
        raise UserError("--new-run (from scratch), --continue (extend a finished run), --init-from (start from "
                        "a registered version) and --finish (end a stopped run) each choose the starting point: "
                        "pass one of them")
    _run_pipeline(workspace, set_, new_run=new_run, extend=continue_, init_from=init_from, finish=finish)


@app.command()
def tune(workspace: Path = Workspace, set_: Optional[List[str]] = Sets):
    """Search hyper-parameters (params.yaml tune.space) with Ray Tune + successive halving (tune.scheduler),
    then evaluate the best trial on the holdout and register it: prepare -> tune -> evaluate -> register ->
    promote."""
    _run_pipeline(workspace, set_, search=True)


def _run_pipeline(workspace: Path, sets: list[str] | None, **flow_args) -> None:
    paths = configure(workspace)
    from flows import params

    # Before anything starts: a second run on this workspace refuses at once.
    with hold_workspace(paths, "ganflow tune" if flow_args.get("search") else "ganflow pipeline"):
        reap_children(paths)  # what a killed earlier run left running: the lock says it is over
        watchdog.start(paths)  # when this process ends, however, what it started ends with it
        params.load(paths.workspace, sets)  # a bad --set value is one message before any server starts
        servers.check_all()  # before Prefect or Ray start: an unreachable server is one message
        prefect_boot = _boot_ephemeral_prefect()
        from flows.pipeline import pipeline as flow  # torch, MLflow, Ray: ~3.5 s, while Prefect boots

        if prefect_boot is not None:
            prefect_boot.join()
            record_children(paths, _prefect_server_pids())
        started = time.perf_counter()
        summary = flow(str(paths.workspace), overrides=sets or [], **flow_args)
    _print_summary(summary, paths, time.perf_counter() - started)


def _boot_ephemeral_prefect():
    """With no Prefect server configured, the flow starts a temporary one in its own process (~4 s)
    and waits for it; start it now instead, so that it boots while the rest of the pipeline imports.
    The flow then finds it running. Returns the thread to join before the flow starts."""
    import threading

    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    boot = threading.Thread(target=SubprocessASGIServer().start, name="prefect-boot", daemon=True)
    boot.start()
    return boot


def _prefect_server_pids() -> list[int]:
    from prefect.server.api.server import SubprocessASGIServer

    process = SubprocessASGIServer().server_process  # a singleton: the one _boot_ephemeral_prefect started
    return [process.pid] if process is not None else []


def _print_summary(s: dict, paths, wall: float) -> None:
    from flows.data.load import load_manifest
    from flows.evaluate import headline
    from gan_core.recipes import RECIPES

    bindir = Path(sys.executable).parent
    what = "Unchanged: still" if s["skipped"] else "Registered"
    print(f"\n{what} {s['model_name']} version {s['version']}: {s['model_uri']}  ({wall:.0f} s)")
    recipe = RECIPES.get(s.get("recipe") or "")
    kind = recipe.kind if recipe else load_manifest(paths.workspace)["kind"]
    print(f"  {headline(s['metrics'], kind, recipe.bar if recipe else None)}")
    if recipe:
        print(f"  recipe: {recipe.name} ({recipe.summary})")
    trained = "no training needed" if s["skipped"] else \
        f"{s['epochs']} epochs (resumed from {s['resumed_from_epoch']})"
    print(f"  stage times (s): {s['timings_s']}; data version {s['data_version']}; {trained}")
    if s.get("promotion"):
        print(f"  promotion: {s['promotion']['decision']}: {s['promotion']['reason']}")
    if s.get("retention"):
        print(f"  {s['retention']['summary']}")
    print(f"  samples and curves: {s['images']}")
    uri, api = os.environ["MLFLOW_TRACKING_URI"], os.environ.get("PREFECT_API_URL", "")
    if uri.startswith(("http://", "https://")):
        print(f"  MLflow UI:   {servers.redact(uri)}   (run {s['mlflow_run_id']})")
    else:
        print(f"  MLflow UI:   {bindir}/ganflow ui -w {paths.workspace}   (open http://127.0.0.1:5000, run {s['mlflow_run_id']})")
    if api:
        print(f"  Prefect UI:  {servers.redact(api.rstrip('/').removesuffix('/api'))}")
    else:
        print(f"  Prefect UI:  PREFECT_HOME={os.environ['PREFECT_HOME']} {bindir}/prefect server start --host 127.0.0.1")
    print(f"  sample it:   {bindir}/ganflow sample --model {s['model_uri']} -n 64 --out samples.png")


@app.command()
def recipes(workspace: Path = Workspace):
    """List the training recipes: what each sets, when `recipe: auto` picks it, what it was measured at and
    the command that measured it; and the one this workspace's params.yaml resolves to."""
    from flows import params as params_mod
    from gan_core.recipes import LARGE, LARGE_SIDE, MAX_PASSES, MAX_REPEAT, RECIPES

    for r in RECIPES.values():
        size = f", up to {r.max_train} training images" if r.max_train else ""
        when = f"{r.kind}, {r.loss or 'any other'} loss{size}" if r.auto else f"never (name it: recipe: {r.name})"
        print(f"{r.name}\n  {r.summary}\n  auto picks it for: {when}\n  measured: {r.measured}"
              f"\n  command: {r.command}\n  sets: " + ", ".join(f"{k}={v}" for k, v in r.values.items()))
        if r.values.get("train.kimg"):
            small, large = r.kimg_for(None), r.kimg_for(LARGE_SIDE)
            print(f"  length: {small:g}k images shown below {LARGE_SIDE} px, {large:g}k from {LARGE_SIDE} px "
                  f"(there width {LARGE['model.width']}) "
                  f"(~{round(small * 1000 / r.values['train.batch_size']):,} / "
                  f"~{round(large * 1000 / r.values['train.batch_size']):,} G steps), whatever the set's size; "
                  f"a set under ~{r.epoch_images:,} images repeats within each epoch (at most {MAX_REPEAT}x) and is "
                  f"shown at most {MAX_PASSES:,} times (G would memorise it)")
    if (workspace / params_mod.PARAMS_FILE).exists():
        print(f"\n{workspace / params_mod.PARAMS_FILE} resolves to: {params_mod.load(workspace).recipe}")


OVERLAP = {"skip": "CANCEL_NEW", "queue": "ENQUEUE"}  # --on-overlap -> Prefect's collision strategy


@app.command()
def serve(workspace: Path = Workspace,
          cron: str = typer.Option("0 3 * * *", help="when to retrain (cron, the server's local time)"),
          name: str = typer.Option("ganflow-retrain", help="deployment name"),
          on_overlap: str = typer.Option("skip", "--on-overlap", help="a run due while the last one still runs: "
                                         "skip (cancelled at once) or queue (starts when the last one ends)")):
    """Serve the pipeline as a scheduled Prefect deployment (retraining). Runs until Ctrl-C.

    At most one run of the deployment at a time (Prefect's deployment concurrency limit); --on-overlap
    says what happens to a run due while one is still running. Each scheduled run is cheap when nothing
    changed: same data version and config hash skip training."""
    paths = configure(workspace)
    from prefect import serve as prefect_serve
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise UserError(f"--cron {cron!r} is not a valid cron expression (e.g. '0 3 * * *')") from None
    if on_overlap not in OVERLAP:
        raise UserError(f"--on-overlap {on_overlap!r}: choose skip or queue")
    servers.check_all()
    try:
        with hold_workspace(paths, "ganflow serve"):
            reap_children(paths)  # what a killed earlier run left running
    except UserError:
        pass  # a run is active on this workspace: what it started is its own
    watchdog.start(paths)  # scheduled runs are our subprocesses: they, their Ray and Prefect end with us

    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    from flows.pipeline import pipeline as flow

    # One run at a time, decided by the Prefect server before a run starts (the workspace lock would
    # otherwise fail the second run, and alert, after it started).
    deployment = flow.to_deployment(name=name, cron=cron, parameters={"workspace": str(paths.workspace)},
                                    concurrency_limit=ConcurrencyLimitConfig(
                                        limit=1, collision_strategy=OVERLAP[on_overlap]))
    print(f"Serving deployment ganflow-pipeline/{name} on cron {cron!r} for {paths.workspace}; "
          f"PREFECT_API_URL={servers.redact(os.environ.get('PREFECT_API_URL', '(ephemeral, in PREFECT_HOME)'))}")
    prefect_serve(deployment)


@app.command()
def prepare(workspace: Path = Workspace,
            source: Optional[Path] = typer.Option(None, help="folder or .zip of PNG/JPEG images (default: bundled digits)"),
            name: Optional[str] = typer.Option(None, help="dataset name (default: the source's name)"),
            image_size: Optional[int] = typer.Option(None, help=ACCEPTED_SIZES_TEXT),
            channels: Optional[int] = typer.Option(None, help="1 (grayscale) or 3 (RGB)")):
    """Prepare the dataset under DVC (import --source into data/raw first, DVC-tracked there). --source/--name/
    --image-size/--channels change the workspace's data: they are written into params.yaml (unlike a run's
    --set)."""
    paths = configure(workspace)
    from flows import params
    from flows.data import dvc, importer

    # Held like a run: rebuilding data/processed under a running evaluation or gate would change its data.
    with hold_workspace(paths, "ganflow prepare"):
        sets = []
        if source is not None:
            sets += [f"data.source={importer.import_source(source, paths.workspace)}",
                     f"data.name={name or importer.dataset_name(source)}"]
        elif name:
            sets.append(f"data.name={name}")
        sets += [f"data.image_size={image_size}"] * (image_size is not None)
        sets += [f"data.channels={channels}"] * (channels is not None)
        params.write_overrides(paths.workspace, sets)
        print(f"data version {dvc.repro(paths)[0]}")


# The params file the stage reads: the one dvc.yaml names for it (params.run.yaml; an older dvc.yaml names
# params.yaml and passes nothing), so the data is always made from the values dvc.lock records.
ParamsFile = typer.Option("params.yaml", "--params", help="params file in the workspace (dvc.yaml names it)")


@stage_app.command("prepare")
def stage_prepare(workspace: Path = Workspace, params_file: str = ParamsFile):
    """Build data/processed from the params file's data section."""
    from flows import params
    from flows.data import stages

    ws = workspace.resolve()
    stages.prepare(params.load(ws, name=params_file), ws)


@stage_app.command("classifier")
def stage_classifier(workspace: Path = Workspace, params_file: str = ParamsFile):
    """Train the dataset's classifier (feature extractor for evaluation)."""
    from flows import params
    from flows.data import stages

    ws = workspace.resolve()
    stages.train_classifier(params.load(ws, name=params_file), ws)


@app.command()
def sample(model: str = typer.Option(..., help="model URI, e.g. models:/ganflow-digits/1 or models:/ganflow-digits@champion"),
           n: int = typer.Option(64, "-n", min=1, help="number of samples (with --interpolate: keyframes, one per seed)"),
           out: Path = typer.Option(..., help="output file: .png (image grid or scatter) or .npy (array)"),
           seed: int = typer.Option(0, help="random seed: the same seed gives the same samples"),
           class_: Optional[str] = typer.Option(None, "--class", help="every sample of this class (a class-"
                                                "conditional model; the class names its data had, e.g. 3)"),
           truncation: Optional[float] = typer.Option(None, "--truncation", help="BigGAN's truncation trick: "
                                                      "latent entries are drawn within +-T (T > 0; smaller: "
                                                      "cleaner, less varied)"),
           interpolate: Optional[int] = typer.Option(None, "--interpolate", help="walk the latent space: N "
                                                     "keyframes from seeds SEED..SEED+N-1, STEPS frames between "
                                                     "each and the next"),
           workspace: Path = Workspace):
    """Write samples from a registered generator: by class, truncated, or as a latent walk."""
    configure(workspace)
    from flows.registry.versions import load_generator
    from gan_core.images import save_grid_png, save_scatter_png
    from gan_core.sampling import SampleRequest, class_index, draw

    if out.suffix not in (".png", ".npy"):
        raise UserError(f"--out must end in .png or .npy, got {out.name!r}")
    try:
        request = SampleRequest(n=n, seed=seed, truncation=truncation, interpolate=interpolate)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    servers.check_mlflow()
    G = load_generator(model)
    if class_ is not None:
        try:
            request = dataclasses.replace(request, label=class_index(class_, G.class_names))
        except ValueError as exc:
            raise UserError(f"--class {class_}: {exc}") from None
    samples = draw(G, request)
    if out.suffix == ".npy":
        import numpy as np

        np.save(out, samples.numpy())
    elif samples.dim() == 4:
        save_grid_png(samples, out, nrow=interpolate if interpolate and interpolate <= 16 else None)  # a leg a row
    else:
        save_scatter_png(samples.numpy(), out)
    print(f"wrote {len(samples)} samples to {out}")


# --- model promotion gate, experiment comparison, UI (flows/registry/promote.py, compare.py) -------

@app.command()
def promote(model: Optional[str] = typer.Option(None, "--model", help="registered model (default: the "
                                                "workspace's, ganflow-<data.name>)"),
            version: Optional[str] = typer.Option(None, "--version", help="the version to put through the gate"),
            rollback: bool = typer.Option(False, "--rollback", help="return `champion` to the one before it in "
                                          "`ganflow history` (again: the one before that), instead of --version"),
            force: bool = typer.Option(False, "--force", help="make --version champion without measuring it "
                                       "(an operator's override; needs --reason)"),
            reason: Optional[str] = typer.Option(None, "--reason", help="why (recorded with a rollback or a "
                                                 "force in the history)"),
            workspace: Path = Workspace):
    """Promotion gate: VERSION gets alias `challenger`, and `champion` only if it beats the champion beyond
    the evaluation noise (params.yaml `promotion`: paired draws at fresh seeds, a confidence bound and a
    minimum effect).

    Exit 0 for every decision, promoted, kept or rejected: a rejected version (failed run, NaN/Inf or
    missing score) is an outcome the gate records, not a CLI error. Unknown model/version: exit 2.
    --rollback moves `champion` back, and --force --reason R moves it to VERSION, both without measuring
    (an operator's decision), recorded in the history."""
    if rollback == (version is not None):
        raise UserError("pass either --version V (put V through the gate) or --rollback")
    if force and (rollback or not (reason or "").strip()):
        raise UserError("--force needs --version V and --reason \"why\" (recorded in the history)")
    paths = configure(workspace)
    from flows import params as params_mod
    from flows.registry import promote as gate

    p = params_mod.load(paths.workspace)
    servers.check_mlflow()
    if os.environ.get("PREFECT_API_URL"):
        servers.check_prefect()  # the promotion lock lives there
    if rollback:
        gate.rollback(model or p.model_name, paths, reason or "operator rollback")
        return
    if force:
        gate.force(model or p.model_name, version, paths, reason.strip())
        return
    decision = gate.promote(model or p.model_name, version, paths, p)  # prints the one-line summary
    if decision.decision == "rejected":
        print(f"  (version {version} was REJECTED and not promoted; the champion is unchanged. "
              "Not an error: exit 0)")


@app.command()
def history(model: Optional[str] = typer.Option(None, "--model", help="registered model (default: the "
                                                "workspace's, ganflow-<data.name>)"),
            workspace: Path = Workspace):
    """The model's champion changes, oldest first: when, version, from which, decision, scores, why, by whom."""
    paths = configure(workspace)
    from mlflow.tracking import MlflowClient

    from flows import params as params_mod
    from flows.registry import history as hist
    from flows.registry.promote import require_model

    name = model or params_mod.load(paths.workspace).model_name
    servers.check_mlflow()
    client = MlflowClient()
    require_model(client, name)
    print(hist.table(name, hist.read(client, name), client.get_registered_model(name).aliases.get("champion")))


@app.command()
def prune(dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed; remove nothing"),
          workspace: Path = Workspace):
    """Apply params.yaml's retention policy: keep the champion and challenger, the newest registered versions
    and training runs (and unfinished ones); delete the rest. Every pipeline run ends with the same step."""
    paths = configure(workspace)
    from flows import params as params_mod
    from flows.retention import prune as apply_policy

    p = params_mod.load(paths.workspace)
    servers.check_mlflow()
    with hold_workspace(paths, "ganflow prune"):  # never judge a run while it trains
        print(apply_policy(paths, p, dry_run=dry_run).report())


@app.command()
def compare(experiment: Optional[str] = typer.Option(None, "--experiment", "-e",
                                                     help="MLflow experiment (default: the workspace's)"),
            out: Optional[Path] = typer.Option(None, "--out", help="HTML report to write (default: "
                                               "<run dir>/comparisons/<experiment>.html); a .png chart goes beside it"),
            workspace: Path = Workspace):
    """Table of an experiment's runs sorted by the primary metric; HTML + PNG, logged to MLflow."""
    paths = configure(workspace)
    from flows import params as params_mod
    from flows.registry.compare import compare as build

    servers.check_mlflow()

    p = params_mod.load(paths.workspace) if experiment is None or (paths.workspace / "params.yaml").exists() else None
    result = build(paths, experiment, out, params=p)
    print(result.text)
    chart = "".join(f" and {png}" for png in (result.png, result.curves) if png)
    print(f"\nwrote {result.html}{chart}; logged to MLflow run {result.run_id} "
          f"(experiment {result.experiment}, artifacts comparison/)")


@app.command()
def ui(port: int = typer.Option(5000, "--port", min=1, max=65535, help="port on 127.0.0.1"),
       workspace: Path = Workspace):
    """Serve the MLflow UI over this workspace's store until Ctrl-C; shows how to start Prefect's."""
    import signal
    import socket
    import subprocess

    paths = configure(workspace)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    bindir = Path(sys.executable).parent
    prefect = f"PREFECT_HOME={os.environ['PREFECT_HOME']} {bindir}/prefect server start --host 127.0.0.1"
    if uri.startswith(("http://", "https://", "databricks")):
        print(f"MLflow UI: {servers.redact(uri)}  (MLFLOW_TRACKING_URI is a server already: open it)\nPrefect UI:  {prefect}")
        return
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(f"port {port} on 127.0.0.1 is in use: pass --port with a free one") from None
    exe = bindir / "mlflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    # One worker and no job runner (GenAI judges/trace rollups: 7 huey processes): a local UI for one
    # person starts in seconds instead of a minute on a small, busy machine. Env overrides the latter.
    cmd += ["ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    child_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
                 os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    if uri.startswith("sqlite:"):  # artifacts proxied for new experiments stay in the run dir, not ./mlartifacts
        cmd += ["--artifacts-destination", str(paths.mlflow_artifacts)]

    def _terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)  # before the child exists: a kill never orphans it
    # Own process group: mlflow ui starts a uvicorn child, and Ctrl-C/SIGTERM must stop both.
    proc = subprocess.Popen(cmd, env=child_env, start_new_session=True)
    rc = 0
    try:
        print(f"MLflow UI:   http://127.0.0.1:{port}   (store {servers.redact(uri)})", flush=True)
        print(f"Prefect UI:  {prefect}   (then open http://127.0.0.1:4200)", flush=True)
        print("Ctrl-C stops the MLflow UI.", flush=True)
        rc = proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(proc)
    if rc:
        print(f"ganflow: mlflow ui exited with code {rc}", file=sys.stderr)
        raise typer.Exit(rc)


def _stop_group(proc) -> None:
    """SIGTERM the UI's process group, SIGKILL what is left after a grace period."""
    import signal

    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + grace
        try:
            os.killpg(proc.pid, sig)
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader, or the group never looks empty
                os.killpg(proc.pid, 0)
                time.sleep(0.1)
        except (ProcessLookupError, PermissionError):
            return


def main() -> None:
    # Typer 0.29 vendors its own Click: its usage errors are these, not click's.
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    try:
        code = app(standalone_mode=False)  # Click's own errors reach the handlers below, not its boxed printout
    except NoArgsIsHelpError as exc:  # `ganflow` alone (or a group alone): its help, as before
        print(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(2)
    except UsageError as exc:  # `ganflow trian`, `-n -5`: one line, as ganflow's own errors
        command = exc.ctx.command_path if exc.ctx else "ganflow"
        print(f"ganflow: error: {exc.format_message()} (see `{command} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:  # end of input at a prompt (Ctrl-C is typer.Exit(130), returned as the code)
        print("ganflow: aborted", file=sys.stderr)
        sys.exit(1)
    except UserError as exc:
        print(f"ganflow: error: {servers.redact_text(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except TrainingFailed as exc:
        print(f"ganflow: {servers.redact_text(str(exc))}\n  (the MLflow run is marked FAILED with the reason; "
              "nothing was registered)", file=sys.stderr)
        sys.exit(1)
    # Outside standalone mode Click returns typer.Exit's / ctx.exit's code instead of exiting: exit with it
    # (entry() reads the status from SystemExit).
    sys.exit(code if isinstance(code, int) else 0)


_exit_status = {"code": 1}  # what the process exits with unless entry() learns otherwise


def entry() -> None:
    """The `ganflow` console script: main(), then an exit without the interpreter's teardown."""
    atexit.register(_skip_teardown)  # first registered, so it runs after every other exit handler
    try:
        main()
    except SystemExit as exc:
        _exit_status["code"] = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        raise
    except KeyboardInterrupt:
        _exit_status["code"] = 130
        raise


def _skip_teardown() -> None:
    """The last exit handler: threads are joined and the others have run (Prefect stopped its server,
    Ray and MLflow flushed), so end the process now. The interpreter's own teardown of the torch, Ray
    and Prefect objects that follows took ~2.2 s after every pipeline (measured), doing nothing useful."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it anyway
            pass
    os._exit(_exit_status["code"])


if __name__ == "__main__":
    entry()

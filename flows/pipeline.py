"""The Prefect flow: prepare (DVC) -> train (Ray Train) -> evaluate -> register (MLflow).

Tasks stay thin: each calls one module of flows/. Import this only after env.configure()."""
from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows import alerts, faults, params as params_mod, retention, servers
from flows.data import dvc
from flows.registry import card, tracking, versions
from flows.run import ray_runtime
from flows.env import RunPaths, configure, hold_workspace
from flows.params import Params
from flows.evaluate import PRIMARY, evaluate, headline, meets_bar, render
from flows.plots import training_curves
from flows.conventions import completed
from flows.data.load import CLASSIFIER_INFO, MANIFEST, load_manifest
from flows.errors import ServiceDown, TrainingDiverged, TrainingFailed, UserError
from flows.logs import quiet_expected_tracebacks
from flows.run.train import fit
from flows.run.identity import (RunIdentity, TrainOutcome, best_kept_state, check_seed, last_checkpoint_epoch,
                                 last_state, resolve_model, run_identity, settle)
from flows.run.tune import run_search
from gan_core.checkpoint import generator_from_state
from gan_core.training import recorded_schedule
from gan_core.recipes import RECIPES, describe

quiet_expected_tracebacks()  # after Prefect set up its logging (at import)


def _retry_unless_diverged(task, task_run, state) -> bool:
    # A NaN/Inf is deterministic: retrying the same run only repeats it. Worker crashes are worth one;
    # a server that stopped answering is not (the rerun resumes once it is back).
    try:
        state.result()
    except (TrainingDiverged, ServiceDown):
        return False
    except Exception:
        return True
    return False


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(paths: RunPaths, overrides: list[str]) -> tuple[str, dict]:
    version, raw = dvc.repro(paths, overrides)
    print(f"data version {version}")
    return version, raw


@task(name="train", retries=1, retry_delay_seconds=2, retry_condition_fn=_retry_unless_diverged,
      cache_policy=NO_CACHE)
def train_task(paths: RunPaths, params: Params, identity: RunIdentity, seed: versions.Seed | None = None) -> TrainOutcome:
    start = None
    if last_checkpoint_epoch(paths.ray_results / identity.name) is None:  # its own checkpoint, once it has one, wins
        if identity.continued_from:
            start = last_state(paths, identity.continued_from)
            print(f"Continuing run {identity.continued_from} (finished after {completed(start['epoch'])} epochs) to "
                  f"{params.train.epochs} epochs from its last checkpoint; the lr holds where its schedule ended")
        elif seed is not None:
            start = {**seed.state, "epoch": -1, "history": []}  # its G, D and optimisers; a schedule of its own
            print(f"Starting from {seed.label}'s G, D and optimiser states"
                  + (" (transfer: it was trained on other data)" if _transfer(seed, identity) else ""))
    try:
        return fit(params, paths, identity, init_state=start)
    except TrainingFailed as exc:
        down = servers.outage()  # the workers' MLflow logging failed because the server is gone?
        if down:
            raise ServiceDown(f"{down} while run {identity.name} trained: its checkpoints are kept, and the same "
                              "command resumes it once the server answers again") from None
        tracking.fail_run(identity.mlflow_run_id, str(exc))
        raise


@task(name="finish", cache_policy=NO_CACHE)
def finish_task(paths: RunPaths, params: Params, identity: RunIdentity, kept: tuple) -> TrainOutcome:
    """`--finish`: the stopped run trains no further; its best kept checkpoint goes on to evaluation."""
    state, done, score = kept
    print(f"Finishing run {identity.name} where it was stopped: its best kept checkpoint is after epoch {done}"
          + (f" (probe score {score:.4g})" if score is not None else " (no probe: the latest)")
          + f" of {recorded_schedule(state['history']) or params.train.epochs}")
    settle(identity, paths, "finished")  # ended by its user: no longer an interrupted run to resume
    return TrainOutcome(identity, state, state["history"], done, 0.0)


@task(name="tune", cache_policy=NO_CACHE)
def tune_task(paths: RunPaths, params: Params, raw: dict, data_version: str, tags: dict[str, str]) -> TrainOutcome:
    """A Ray Tune search; returns the best trial's outcome (its MLflow child run carries on)."""
    return run_search(params, raw, paths, data_version, tags).best


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(paths: RunPaths, params: Params, outcome: TrainOutcome) -> dict[str, float]:
    G = generator_from_state(outcome.state)
    metrics, samples = evaluate(G, params, paths.workspace)
    recipe = RECIPES[params.recipe]
    bar = recipe.bar
    print(headline(metrics, recipe.kind, bar))
    tracking.log_verdict(outcome.identity.mlflow_run_id, *meets_bar(metrics, bar))
    out = paths.home / "runs" / outcome.identity.name
    out.mkdir(parents=True, exist_ok=True)
    images = {  # samples beside real holdout images; small data: also each sample's nearest training image
        **render(samples, out, paths.workspace, metrics.get("memorisation_threshold")),
        "curves": training_curves(outcome.history, out / "training_curves.png"),
    }
    tracking.log_evaluation(outcome.identity.mlflow_run_id, metrics, images)
    tracking.MlflowClient().log_artifact(outcome.identity.mlflow_run_id,
                                         str(paths.workspace / MANIFEST), "data")
    return metrics


@task(name="register", cache_policy=NO_CACHE)
def register_task(paths: RunPaths, params: Params, outcome: TrainOutcome, data_version: str, metrics: dict) -> str:
    manifest = load_manifest(paths.workspace)
    evaluator = json.loads((paths.workspace / CLASSIFIER_INFO).read_text())["evaluator_version"]
    tags = versions.VersionTags.of_run(
        data_version=data_version, config_hash=outcome.identity.training_hash,
        git_sha=tracking.git_sha(paths.workspace), ray_run=outcome.identity.name, evaluator_version=evaluator,
        primary_metric=PRIMARY[manifest["kind"]], metrics=metrics)
    version = versions.register(outcome.identity.mlflow_run_id, params, outcome.state, tags, manifest["classes"])
    _write_cards(params, manifest, version, tags, metrics, outcome.identity.mlflow_run_id)
    faults.point("registered")  # the reliability test's crash: registered, not yet through the gate
    tracking.finish_run(outcome.identity.mlflow_run_id)
    return version


def _seed(uri: str, params: Params, paths: RunPaths) -> versions.Seed:
    """The registered version --init-from names, checked to fit this run's model and data shape."""
    seed = versions.seed_from(uri)
    manifest = load_manifest(paths.workspace)
    check_seed(seed.state, resolve_model(params, manifest), manifest["shape"], uri)
    return seed


def _transfer(seed: versions.Seed, identity: RunIdentity) -> bool:
    return bool(seed.data_version) and seed.data_version != identity.data_version


def _lineage(identity: RunIdentity, seed: versions.Seed | None) -> dict[str, str]:
    """Where a run's starting weights came from, as MLflow run tags."""
    tags = {}
    if identity.continued_from:
        tags["ganflow.continued_from"] = identity.continued_from
    if seed is not None:
        tags["ganflow.init_from"] = seed.label
        tags["ganflow.transfer"] = (f"yes: {seed.label} was trained on data {seed.data_version[:12]}"
                                    if _transfer(seed, identity) else "no")
    return tags


def _write_cards(params: Params, manifest: dict, version: str, tags, metrics: dict, run_id: str) -> None:
    """The version's model card and the registered model's description (MLflow registry pages)."""
    optim, model = params.resolved_optim, resolve_model(params, manifest)
    recipe_line = (f"{params.loss.name} loss, {describe(optim)}, {'class-conditional ' if model.conditional else ''}"
                   f"{model.arch} width {model.width}, {params.train.epochs} epochs of batch {params.train.batch_size}")
    client = tracking.MlflowClient()
    client.update_model_version(params.model_name, version, description=card.version_card(
        params.model_name, version, dataset=params.data.name, kind=manifest["kind"], shape=manifest["shape"],
        counts=manifest["counts"], classes=manifest["classes"], data_version=tags.data_version,
        recipe=params.recipe, recipe_line=recipe_line,
        headline=headline(metrics, manifest["kind"], RECIPES[params.recipe].bar),
        run_id=run_id, ray_run=tags.ray_run, git_sha=tags.git_sha, evaluator_version=tags.evaluator_version))
    client.update_registered_model(params.model_name, description=card.model_description(
        params.model_name, params.data.name, manifest["kind"], manifest["shape"], model.conditional,
        manifest["classes"]))


def _unchanged(paths, params, identity, data_version, version, tags, timings, retained, promotion) -> dict:
    """Nothing changed since a registered version (same data version and config hash): skip."""
    print(f"Unchanged since {params.model_name} version {version} (data version {data_version}, config hash "
          f"{identity.training_hash}): skipping training, evaluation and registration. "
          "Pass --new-run to retrain anyway.")
    metrics = versions.VersionTags.read(tags).metrics()
    return _summary(paths, params, identity, data_version, version, metrics, timings, epochs=None, resumed=None,
                    skipped=True, promotion=promotion, retention=retained)


def _settle_crashed(paths: RunPaths, params: Params, timed) -> dict | None:
    """The gate's decision a run that crashed after registering left undone, made by the next run even
    though nothing changed: the newest version the gate never decided on goes through it. (Its MLflow
    run is already finished: registering ends it.)"""
    ungated = versions.newest_ungated(params.model_name)
    if ungated is None:
        return None
    print(f"{params.model_name} version {ungated} was registered without a promotion decision (an interrupted "
          "run): putting it through the gate now")
    return timed("promote", promote_task, paths, params, ungated)


def _summary(paths, params, identity, data_version, version, metrics, timings, epochs, resumed,
             skipped=False, promotion=None, retention=None) -> dict:
    summary = {
        "model_name": params.model_name,
        "version": version,
        "model_uri": f"models:/{params.model_name}/{version}",
        "recipe": params.recipe,
        "mlflow_run_id": identity.mlflow_run_id,
        "ray_run": identity.name,
        "data_version": data_version,
        "metrics": metrics,
        "epochs": epochs,
        "resumed_from_epoch": resumed,
        "skipped": skipped,
        "promotion": promotion,
        "retention": retention,
        "timings_s": timings,
        "images": str(paths.home / "runs" / identity.name),
    }
    paths.last_pipeline.write_text(json.dumps(summary, indent=2))
    return summary


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(paths: RunPaths, params: Params, version: str) -> dict:
    """The gate: champion only if better beyond the evaluation noise, on the same holdout and evaluator."""
    from flows.registry.promote import promote

    return promote(params.model_name, version, paths, params).as_dict()


@task(name="retention", cache_policy=NO_CACHE)
def retention_task(paths: RunPaths, params: Params) -> dict:
    """params.yaml's retention policy, the run's last step; a failure here is a warning: the version the
    run trained and registered stands."""
    try:
        pruned = retention.prune(paths, params)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the run itself succeeded
        reason = f"retention failed: {type(exc).__name__}: {exc}"
        _warn(f"{reason} (the run itself succeeded; `ganflow prune` applies the policy again)")
        return {"summary": reason, "error": True}
    print(pruned.report())
    return pruned.as_dict()


def _warn(message: str) -> None:
    """A warning in the flow run's log (Prefect's UI), or Python's when called outside a run."""
    import logging

    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().warning(message)
    except MissingContextError:
        logging.getLogger("ganflow").warning(message)


@flow(name="ganflow-pipeline", log_prints=True)
def pipeline(workspace: str, new_run: bool = False, search: bool = False, extend: bool = False,
             init_from: str | None = None, overrides: list[str] | None = None, finish: bool = False) -> dict:
    """`overrides`: this run's --set values, laid over params.yaml for this run only (a scheduled run has none)."""
    paths = configure(Path(workspace))
    progress = {"stage": "start"}
    try:
        with hold_workspace(paths, "ganflow tune" if search else "ganflow pipeline"):
            return _run(paths, new_run, search, extend, init_from, list(overrides or []), progress, finish)
    except BaseException as exc:  # failed, or stopped (Ctrl-C / SIGTERM): whoever watches the schedule hears
        from prefect.runtime import flow_run

        down = servers.outage() if isinstance(exc, Exception) and not isinstance(exc, UserError) else None
        if down:  # a server gone mid-run (MLflow while registering, ...): say so, not its client's traceback
            exc = ServiceDown(f"{down} during the {progress['stage']} stage; the same command resumes the run "
                              "once it answers again")

        alerts.send("run_failed" if isinstance(exc, Exception) else "run_stopped",
                    str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,  # alerts redact, then cut
                    workspace=str(paths.workspace), run=flow_run.name, stage=progress["stage"])
        if down:
            raise exc from None
        raise


def _run(paths: RunPaths, new_run: bool, search: bool, extend: bool, init_from: str | None,
         overrides: list[str], progress: dict[str, str], finish: bool = False) -> dict:
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        progress["stage"] = name
        started = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - started, 1)
        return result

    try:
        # The run's one reading of params.yaml, with its --set values: the data stages prepare from it, and
        # resolved after prepare (`recipe: auto` needs the data's size) every task and Ray worker gets this
        # snapshot; an edit to the file during the run waits for the next run.
        data_version, raw = timed("prepare", prepare_task, paths, overrides)
        params = params_mod.resolve_raw(paths.workspace, raw, overrides)
        tags = tracking.overrides_tags(overrides)
        if search:
            outcome = timed("tune", tune_task, paths, params, raw, data_version, tags)
            identity = outcome.identity
        else:
            seed = _seed(init_from, params, paths) if init_from else None
            identity = run_identity(params, data_version, paths, new_run, guard_interrupted=True, extend=extend,
                                    init_from=seed.label if seed else None, overrides=overrides)
            cached = None if new_run else versions.version_for_run(params.model_name, identity.name)
            if cached:
                promotion = _settle_crashed(paths, params, timed)
                retained = timed("retention", retention_task, paths, params)
                return _unchanged(paths, params, identity, data_version, *cached, timings, retained, promotion)
            kept = best_kept_state(paths, identity.name) if finish else None  # before an MLflow run: nothing to end
            tracking.start_run(params, paths, identity, data_version, extra_tags={**_lineage(identity, seed), **tags})
        try:
            if finish:
                outcome = timed("train", finish_task, paths, params, identity, kept)
            elif not search:
                outcome = timed("train", train_task, paths, params, identity, seed)
            ray_runtime.shutdown(wait=False)  # Ray's part is done: its ~2 s stop overlaps evaluation
            metrics = timed("evaluate", evaluate_task, paths, params, outcome)
            version = timed("register", register_task, paths, params, outcome, data_version, metrics)
        except ServiceDown:
            raise  # MLflow may be the one gone; the resumed run finishes its MLflow run
        except BaseException:
            tracking.finish_run(identity.mlflow_run_id, "FAILED")  # never leave a run "RUNNING"
            raise
        # After the run is finished: a gate error must not mark the trained run FAILED.
        promotion = timed("promote", promote_task, paths, params, version)
    finally:
        ray_runtime.shutdown()
    # Last, with Ray stopped: its session folder is settled, and the run just registered is the newest.
    retained = timed("retention", retention_task, paths, params)
    return _summary(paths, params, identity, data_version, version, metrics, timings,
                    epochs=len(outcome.history), resumed=outcome.resumed_from_epoch, promotion=promotion,
                    retention=retained)

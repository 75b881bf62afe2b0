"""params.yaml: the one validated configuration of a ganflow workspace. A run's --set overrides are its own:
they are laid over params.yaml into params.run.yaml (RUN_PARAMS_FILE), which DVC's stages read, and never
written into params.yaml."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from flows.data.load import MANIFEST
from flows.errors import UserError
from gan_core import recipes
from gan_core.augment import AugmentConfig
from gan_core.config import LossConfig, ModelConfig, OptimConfig, ResolvedOptim, Strict
from gan_core.recipes import resolve
from gan_core.sizes import ACCEPTED_SIZES, ACCEPTED_SIZES_TEXT, NATIVE_SIZES, native_size

PARAMS_FILE = "params.yaml"
# What the current (or last) run used: params.yaml with that run's --set values laid over it. dvc.yaml's
# stages name it as their params file, so a one-off data override reaches DVC and dvc.lock records it, while
# params.yaml, what a scheduled run retrains, stays as the user wrote it. Rewritten by every run; not committed.
RUN_PARAMS_FILE = "params.run.yaml"


IMAGE_DATASETS = ("digits",)
POINT_DATASETS = ("ring8", "grid25", "gauss8", "gauss25")
BUILTIN_DATASETS = IMAGE_DATASETS + POINT_DATASETS


class DataConfig(Strict):
    name: str = Field("digits", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="dataset name; a bundled one (digits, ring8, grid25, gauss8, gauss25) "
                                  "needs no source")
    source: str | None = Field(None, description="folder/zip of images; default: the bundled dataset `name`")
    image_size: int = Field(8, description="images: the side in px, 8 to 256; the models build "
                            f"{', '.join(map(str, NATIVE_SIZES))}, another side is prepared at the nearest of those")
    channels: Literal[1, 3] = 1
    points: int = Field(12_500, ge=100, description="2-D sets: points drawn (train + holdout)")
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of all items held out for selection "
                                "(per-epoch probe, kept checkpoints, Tune); the holdout is for reports and the gate")
    mirror: bool = Field(False, description="images: also train on horizontally flipped copies (off for digits)")
    seed: int = 0

    @field_validator("image_size", mode="after")
    @classmethod
    def _image_size(cls, v: int) -> int:
        if not ACCEPTED_SIZES[0] <= v <= ACCEPTED_SIZES[1]:
            raise ValueError(ACCEPTED_SIZES_TEXT)
        return v

    @model_validator(mode="after")
    def _known_dataset(self):
        if self.source is None and self.name not in BUILTIN_DATASETS:
            raise ValueError(f"data.name {self.name!r} is not a bundled dataset ({', '.join(BUILTIN_DATASETS)}): "
                             "set data.source to a folder or zip of images")
        return self

    @property
    def builtin(self) -> str | None:
        """The bundled dataset this config reads, or None for user images."""
        src = self.source if self.source is not None else self.name
        return src if src in BUILTIN_DATASETS else None

    @property
    def is_points(self) -> bool:
        return self.builtin in POINT_DATASETS


class ClassifierConfig(Strict):
    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    feature_dim: int = Field(64, ge=2)
    seed: int = 0


class TrainConfig(Strict):
    epochs: int = Field(40, ge=1)
    kimg: float | None = Field(None, gt=0, description="thousands of images D sees from the data, the recipe's "
                               "measure of a run's length (StyleGAN's): train.epochs is derived from it and the "
                               "training-set size; null for a recipe counted in epochs (2-D points)")
    time_budget: float | None = Field(None, gt=0, description="minutes of training: after the first epochs the "
                                      "schedule (lr decay included) is shrunk to fit, never lengthened; recorded "
                                      "with the run, so a resume keeps it")
    stop_patience: float | None = Field(None, gt=0, le=1, description="stop once the lr decay has run this share "
                                        "of the schedule with no probe improving beyond its draw noise; null: off")
    repeat: int = Field(1, ge=1, description="passes over the training set in one epoch (a small set repeats "
                        "so an epoch has enough G steps)")
    batch_size: int = Field(32, ge=2, description="global batch, split across workers")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="EMA of G used for evaluation; 0 = off")
    seed: int = 0
    num_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Ray Train workers (DDP); auto: one per GPU when the cluster has GPUs (and use_gpu "
        "allows), else 1")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs (and torch threads) per worker")
    use_gpu: Literal["auto", True, False] = "auto"
    checkpoint_every: int = Field(5, ge=1, description="epochs between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures Ray Train recovers from")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16: forwards under autocast (penalties stay fp32); auto: where measured to help "
        "(gan_core.training.resolve_speed), decided when the run starts and kept by its resumes")
    channels_last: Literal["auto", True, False] = Field("auto", description="NHWC image tensors; auto: where "
                                                        "measured to help")
    compile: bool = Field(False, description="torch.compile G's and D's forwards (slow start; pays on long GPU runs)")
    r1_every: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="lazy R1 (StyleGAN2): the penalty on every k-th D step, weighted by k; auto: 16 for "
        "images, 1 for points (gan_core.training.resolve_r1_every)")


    def workers(self, gpus: int) -> int:
        """num_workers for a cluster with `gpus` GPUs."""
        if self.num_workers != "auto":
            return self.num_workers
        return gpus if gpus and self.use_gpu is not False else 1


class EvalConfig(Strict):
    num_samples: int = Field(2500, ge=10, description="generated samples scored (PacGAN uses 2,500)")
    every: int = Field(1, ge=0, description="epochs between in-training probes of the selection metric; 0 = off")
    probe_samples: int = Field(1000, ge=10, description="samples per in-training probe")
    probe_budget: float = Field(0.1, gt=0.0, le=1.0, description="the probes' most share of training time: a "
                                "due probe waits while they cost more (the last epoch's always runs)")
    seed: int = 1234


SPEC_KINDS = ("choice", "grid", "uniform", "loguniform")
# What PBT may change in a running trial: values a restored optimiser/loss can take over mid-training.
# Shapes (model.*), the loss itself and the optimiser type would not fit the donor's weights or state.
PBT_MUTABLE = ("optim.lr_g", "optim.lr_d", "optim.betas", "optim.n_critic", "optim.lr_decay_start",
               "loss.gp_weight", "loss.r1_gamma", "loss.clip", "loss.gp_one_sided")


class TuneSection(Strict):
    """Ray Tune: `space` maps a params key (e.g. optim.lr_g) to {choice|grid: [...]} or
    {uniform|loguniform: [low, high]}."""

    num_samples: int = Field(4, ge=1)
    scheduler: Literal["asha", "sha", "fifo", "pbt"] = Field(
        "sha", description="asha: asynchronous successive halving; sha: synchronous (every trial reaches a "
        "rung before any goes on); fifo: every trial to the end; pbt: population based training")
    grace_period: int = Field(2, ge=1, description="epochs before ASHA/SHA may stop a trial (the first rung)")
    reduction_factor: int = Field(2, ge=2, description="ASHA/SHA: rungs at grace * factor^k epochs; 1/factor "
                                  "of the trials go on at each")
    perturbation_interval: int = Field(4, ge=1, description="PBT: epochs between exploit/explore steps")
    pbt_synch: bool = Field(True, description="PBT: every trial waits at each perturbation, so the population "
                            "is compared at the same epoch even when trials queue for CPUs or start late (each "
                            "wait restarts the trial's TorchTrainer); false: asynchronous, no waiting, but a "
                            "trial that runs ahead of or behind the others may never be compared with them")
    max_concurrent: int | None = Field(None, ge=1, description="trials training at once; default: CPUs // "
                                       "(train.num_workers * cpus_per_worker) (not with PBT, whose CPUs alone "
                                       "bound how many trials train at once)")
    space: dict[str, dict[str, list]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _specs(self):
        for key, spec in self.space.items():
            if len(spec) != 1 or next(iter(spec)) not in SPEC_KINDS:
                raise ValueError(f"tune.space.{key} must be one of {{{', '.join(SPEC_KINDS)}: [...]}}, got {spec}")
            kind, values = next(iter(spec.items()))
            if kind in ("uniform", "loguniform") and (len(values) != 2 or not values[0] < values[1]):
                raise ValueError(f"tune.space.{key}.{kind} needs [low, high] with low < high")
            if not values:
                raise ValueError(f"tune.space.{key}.{kind} is empty")
        if self.scheduler == "pbt":
            fixed = [k for k in self.space if k not in PBT_MUTABLE]
            if fixed:
                raise ValueError(f"PBT changes values inside running trials, and {', '.join(fixed)} cannot "
                                 f"change there (weights or optimiser state would not fit); PBT can search "
                                 f"{', '.join(PBT_MUTABLE)}. Use scheduler sha or asha for the others.")
            if self.max_concurrent is not None:
                # Tune's limit holds back the creation of trials, so PBT would never see the later ones.
                raise ValueError("tune.max_concurrent cannot be used with PBT: it limits how many trials exist "
                                 "at once, so later ones would never be compared with the first. Leave it null; "
                                 "the CPUs bound how many trials train at once.")
        return self


class PromotionConfig(Strict):
    """The promotion gate's rule (flows.registry.promote): both versions are measured over `draws` paired
    evaluation draws at fresh seeds, and the challenger is promoted only when the one-sided `confidence`
    upper bound of the paired difference, relative to the champion's score, is below -`min_effect`."""

    draws: int = Field(5, ge=2, le=100, description="paired evaluation draws per decision (each version "
                       "measured this many times at the same fresh seeds); the gate's time grows with it")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="one-sided confidence of the bound")
    min_effect: float = Field(0.02, ge=0.0, lt=1.0, description="the smallest improvement that counts, relative "
                              "to the champion's score (0.02: 2% lower); measured in bench/RESULTS.md section 8")


class RegistryConfig(Strict):
    model_name: str | None = Field(None, description="default: ganflow-<data.name>")
    experiment: str | None = Field(None, description="MLflow experiment; default: ganflow-<data.name>")


class RetentionConfig(Strict):
    """What pruning keeps (flows.retention: `ganflow prune` and the last step of every pipeline run);
    null keeps everything of that kind."""

    keep_versions: int | None = Field(5, ge=1, description="registered versions kept: the newest N, plus every "
                                      "version holding an alias (champion, challenger), which is never deleted")
    keep_runs: int | None = Field(5, ge=1, description="training runs kept (Ray run folder with its checkpoints, "
                                  "sample pictures, MLflow run): the newest N, plus the runs behind kept versions "
                                  "and unfinished runs the same command would resume")


class Params(Strict):
    """The run's parameters, resolved (see validate) and frozen: one snapshot per run, passed down."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    recipe: str = Field("auto", description="auto (by data kind, size and loss) or a name from `ganflow recipes`; "
                        "after loading: the recipe used")
    data: DataConfig = DataConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    augment: AugmentConfig = AugmentConfig()
    tune: TuneSection = TuneSection()
    registry: RegistryConfig = RegistryConfig()
    promotion: PromotionConfig = PromotionConfig()
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _known_recipe(self):
        if self.recipe != "auto" and self.recipe not in recipes.RECIPES:
            raise ValueError(f"recipe {self.recipe!r} is unknown; use auto or one of {', '.join(recipes.RECIPES)} "
                             "(ganflow recipes lists them)")
        return self

    @model_validator(mode="after")
    def _space_keys_exist(self):
        # A typo in a searched key must fail now, not in every trial.
        raw = self.model_dump(mode="json")
        for key, spec in self.tune.space.items():
            kind, values = next(iter(spec.items()))
            trial = json.loads(json.dumps(raw))
            try:
                apply(trial, key, values[0])
                Params.model_validate({**trial, "tune": {}})
            except (UserError, ValidationError) as exc:
                raise ValueError(f"tune.space.{key}: {values[0]!r} is not a valid value there ({exc})") from None
        return self

    @property
    def model_name(self) -> str:
        return self.registry.model_name or f"ganflow-{self.data.name}"

    @property
    def experiment(self) -> str:
        return self.registry.experiment or f"ganflow-{self.data.name}"

    @property
    def resolved_optim(self) -> ResolvedOptim:
        """The optimiser actually used (after loading, every optim.* field holds the recipe's value)."""
        return resolve(self.loss, self.optim)

    def training_key(self) -> dict[str, Any]:
        """Everything that changes the trained weights (not how the run is executed): the recipe's values
        included, so a changed recipe is a new run."""
        keyed = {k: self.model_dump(mode="json")[k] for k in ("recipe", "data", "model", "loss", "train", "augment")}
        keyed["optim"] = dataclasses.asdict(self.resolved_optim)
        for volatile in ("num_workers", "cpus_per_worker", "use_gpu", "max_failures", "checkpoint_every", "keep_checkpoints",
                         "channels_last", "compile"):
            keyed["train"].pop(volatile)  # how we run, not what we learn (up to float summation order)
        return json.loads(json.dumps(keyed, sort_keys=True, default=str))

    def training_hash(self) -> str:
        """Identity of a training run: a digest of training_key."""
        return hashlib.sha256(json.dumps(self.training_key(), sort_keys=True).encode()).hexdigest()[:12]


def format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"invalid {where}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        got = e.get("input")
        shown = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  {field}: {msg}{shown}")
    return "\n".join(lines)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (`optim.lr_g`), the spelling of --set and MLflow params."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-5` (no dot) is a string; ruamel, DVC and people write it as a
    float (YAML 1.2). Read it as one too, or a tune.space list ends up holding strings."""


_Loader.add_implicit_resolver(  # after the int resolver: reached only by what is not an int
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    loader = _Loader(text)  # what yaml.safe_load does, with the resolver above
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`key.sub=value` pairs; values are YAML scalars/lists (`3`, `0.5`, `true`, `[0.5, 0.9]`)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = load_yaml(raw)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
    return out


def apply(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if isinstance(child, str) and k == "loss":
            child = {"name": child}  # `loss: ns` shorthand gains sub-keys
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {dotted}: {k} is a value, not a section")
        node[k] = child
        node = child
    node[keys[-1]] = value


def read_raw(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"no {path.name} in {path.parent} (run ganflow from a workspace, or pass --workspace)")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of sections (data, model, loss, train, ...)")
    return raw


def _check(raw: dict[str, Any], where: str) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err, where)) from None


def _section(tree: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    """The mapping holding `dotted`'s last key (None when a section is absent), and that key."""
    *path, leaf = dotted.split(".")
    node: Any = tree
    for k in path:
        node = node.get(k) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), leaf


def validate(raw: dict[str, Any], where: str, n_train: int | None = None) -> Params:
    """params.yaml made concrete: validated, then every recipe-owned field the user left null (or out)
    filled from the recipe (`recipe: auto` picks it by data kind, `n_train` items and loss), then
    validated again. The result names the recipe used and holds no null a recipe decides."""
    bare = json.loads(json.dumps(raw))
    if isinstance(bare.get("loss"), str):
        bare["loss"] = {"name": bare["loss"]}  # `loss: ns` shorthand
    explicit: dict[str, Any] = {}
    for key in recipes.RECIPE_KEYS:
        node, leaf = _section(bare, key)
        value = None if node is None else node.get(leaf)
        if value is None or (key == "model.arch" and value == "auto"):  # auto: the recipe's choice
            if node is not None:
                node.pop(leaf, None)  # left to the recipe
        else:
            explicit[key] = value
    first = _check(bare, where)  # the user's own values, every mistake named, before a recipe fills the rest
    kind = "points" if first.data.is_points else "images"
    recipe = recipes.RECIPES[first.recipe] if first.recipe != "auto" else \
        recipes.choose(kind, n_train, first.loss.name)
    if recipe.kind != kind:
        raise UserError(f"recipe {recipe.name!r} is for {recipe.kind}, and {first.data.name} is {kind}: "
                        "use recipe: auto")
    try:
        filled = recipes.fill(explicit, recipe, first.loss.name,
                              n_train and n_train * (2 if first.data.mirror else 1),  # --mirror doubles it
                              None if kind == "points" else native_size(first.data.image_size))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for key, value in filled.items():  # a recipe value of None (no lr decay) stays null
        apply(bare, key, value)
    bare["recipe"] = recipe.name
    params = _check(bare, where)
    if kind == "points" and (params.augment.policy != "off" or params.data.mirror):
        raise UserError(f"invalid {where}: augment.policy and data.mirror are for images; {params.data.name} is "
                        "2-D points (set augment.policy: off, data.mirror: false)")
    if kind == "points" and params.train.kimg is not None:
        raise UserError(f"invalid {where}: train.kimg (images shown) is for images; {params.data.name} is 2-D "
                        "points, counted in train.epochs")
    return params


def load(workspace: Path, overrides: list[str] | None = None, name: str = PARAMS_FILE) -> Params:
    return read(workspace, overrides, name)[0]


def read(workspace: Path, overrides: list[str] | None = None,
         name: str = PARAMS_FILE) -> tuple[Params, dict[str, Any]]:
    """One reading of params.yaml (or `name`), with `overrides` laid over it: the resolved params, and the
    file's values as written (nulls included), over which a Tune trial lays its own values."""
    raw = read_raw(workspace / name)
    for key, value in parse_overrides(overrides or []).items():
        apply(raw, key, value)
    return resolve_raw(workspace, raw, overrides, name), raw


def resolve_raw(workspace: Path, raw: dict[str, Any], overrides: list[str] | None = None,
                name: str = PARAMS_FILE) -> Params:
    """`raw`, a params file's values with `overrides` laid over them, validated and made concrete."""
    where = str(workspace / name) + (" with --set overrides" if overrides else "")
    return validate(raw, where, training_set_size(workspace, raw))


def training_set_size(workspace: Path, raw: dict[str, Any]) -> int | None:
    """How many items the recipe will train on (for `recipe: auto`): the prepared manifest's count when
    it was made from this source, else the number of images in the source less the held-out shares.
    None for 2-D point sets (no recipe depends on their size) and for sources that cannot be read yet
    (prepare reports those)."""
    import zipfile

    from gan_core.data import IMAGE_EXTENSIONS

    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    try:
        d = DataConfig.model_validate(data)
    except ValidationError:
        return None  # validate() names the field
    if d.is_points:
        return None
    manifest = workspace / MANIFEST
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if (m.get("name"), m.get("source")) == (d.name, d.source or d.name):
            return int(m["counts"]["train"])
    if d.builtin == "digits":
        total = 1797  # sklearn's digits
    else:
        src = Path(d.source) if Path(d.source).is_absolute() else workspace / d.source
        if src.is_dir():
            total = sum(1 for f in src.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                total = sum(1 for n in z.namelist() if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            return None
    return int(total * (1.0 - d.holdout_fraction - d.val_fraction))


def write_overrides(workspace: Path, overrides: list[str]) -> Params:
    """Write --set values into params.yaml itself: a deliberate change of what the workspace trains on
    (`ganflow prepare --source/--name`). A run's --set is one-off: see write_run_params."""
    params = load(workspace, overrides)  # refuse bad values before touching the file
    if overrides:
        _overlay(workspace, overrides, PARAMS_FILE)
    return params


def write_run_params(workspace: Path, overrides: list[str]) -> dict[str, Any]:
    """This run's parameters, params.yaml with `overrides` laid over it, written to RUN_PARAMS_FILE for
    DVC's stages (every run rewrites it, so a run without --set goes back to params.yaml's values). Returns
    the values written: the run's one reading of its parameters. params.yaml is only read."""
    load(workspace, overrides)  # refuse bad values before writing anything
    _overlay(workspace, overrides, RUN_PARAMS_FILE,
             header=f"# Written by ganflow for its latest run: {PARAMS_FILE} with that run's --set values laid over "
                    f"it: {json.dumps(overrides or [])}\n# dvc.yaml's stages read it. Edit {PARAMS_FILE}, not this "
                    "file: every run rewrites it.\n")
    return read_raw(workspace / RUN_PARAMS_FILE)


def _overlay(workspace: Path, overrides: list[str], dest: str, header: str = "") -> None:
    """params.yaml with `overrides` applied, written to `dest` atomically. Round-trips with ruamel so the
    user's comments and order survive."""
    import io

    from ruamel.yaml import YAML

    ry = YAML()
    # ruamel writes None as an empty value; params.yaml spells it `null`, and a diff should show only the
    # lines the overrides changed.
    ry.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = ry.load((workspace / PARAMS_FILE).read_text()) or {}
    for key, value in parse_overrides(overrides).items():
        apply(doc, key, value)
    out = io.StringIO()
    ry.dump(doc, out)
    tmp = workspace / f".{dest}.tmp"
    tmp.write_text(header + out.getvalue())
    tmp.replace(workspace / dest)  # a killed run never leaves half a file for DVC

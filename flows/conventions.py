"""Names and numbers that several modules share, each defined once here.

Metric keys are what MLflow already holds for earlier runs: renaming one would make old runs incomparable,
so a key changes only with a reader for the old name. The per-step training metrics (loss_d, d_acc_real,
...) are produced by gan_core.steps.train_epoch; the ones below are those flows/ writes or reads by name."""
from __future__ import annotations

from gan_core.training import SCORE  # the training loop's stop rule reads the same key

# --- metric keys -----------------------------------------------------------------------------------------
# The selection target: the last probe's selection metric (flows.evaluate.SELECT) on the validation split
# (lower is better), +inf once a run diverged. Ray Tune searches on it, the checkpoint keeper keeps the
# best by it. Every epoch's report carries it (Tune insists). Logged as "score" since the first runs.
SELECTION = SCORE
PROBE_PREFIX = "probe_"  # per-epoch probe results: probe_fd_ratio, probe_modes, ...
EVAL_PREFIX = "eval/"    # the final evaluation on the holdout, one MLflow metric per key: eval/fd_ratio, ...

# The line each epoch prints, and the panels of training_curves.png.
PROGRESS = ("loss_d", "loss_g", "d_acc_real", "d_acc_fake", "wasserstein", SELECTION)
PANELS = (
    ("losses", ("loss_d", "loss_g")),
    ("D accuracy (0.5 = equilibrium)", ("d_acc_real", "d_acc_fake")),
    ("Wasserstein estimate E[D(x)]-E[D(G(z))]", ("wasserstein",)),
    ("gradient norms", ("grad_norm_d", "grad_norm_g")),
    # Probed every eval.every epochs (within their time budget), so a curve has gaps: drawn where measured.
    ("probe on the validation split (lower is better)", (f"{PROBE_PREFIX}fd_ratio", f"{PROBE_PREFIX}mixture_kl")),
)
SAMPLES_KEY = "training_samples"  # the MLflow image key of the sample grid logged at each checkpoint (step: epochs completed)


# --- checkpoints ------------------------------------------------------------------------------------------
STATE_FILE = "state.pt"  # the training state (gan_core.checkpoint.training_state) inside each checkpoint folder


# --- epoch numbering -------------------------------------------------------------------------------------
# A run's history, its checkpoints and Ray's reports carry the 0-based epoch *index* ("epoch"); people, the
# MLflow step axis, Tune's schedules and resume messages count epochs *completed*. Convert only here.

def completed(epoch_index: int) -> int:
    """Epochs completed once the epoch with this 0-based index has finished."""
    return int(epoch_index) + 1


def checkpoint_dir_name(epoch_index: int) -> str:
    """The folder Ray Train gives the checkpoint taken after epoch `epoch_index` (sorts by epoch)."""
    return f"epoch_{int(epoch_index):05d}"


def completed_from_checkpoint_dir(name: str) -> int:
    """Epochs completed by the checkpoint in folder `name` (checkpoint_dir_name's inverse, + 1)."""
    prefix = "epoch_"
    if not name.startswith(prefix):
        raise ValueError(f"{name!r} is not a ganflow checkpoint folder ({prefix}NNNNN)")
    return completed(int(name[len(prefix):]))

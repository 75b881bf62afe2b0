"""Errors that are the user's to fix: the CLI prints them as one clear message, never a traceback."""


class UserError(Exception):
    """A mistake in input or configuration; the message says what to change."""


class TrainingFailed(RuntimeError):
    """Training ended without a usable model (worker errors beyond max_failures, NaN/Inf)."""


class TrainingDiverged(TrainingFailed):
    """NaN/Inf in training: deterministic, so retrying the same run would only diverge again."""


class ServiceDown(UserError):
    """A server the run needs (MLflow, Prefect) stopped answering mid-run: one message, no traceback, no
    retry; the run's checkpoints stay, and the same command resumes it once the server is back."""

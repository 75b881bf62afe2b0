"""Orchestration of ganflow, grouped by role: flows/data (DVC stages and the loaders), flows/run (training
on Ray Train, search on Ray Tune, run bookkeeping), flows/registry (MLflow runs, registered versions, the
promotion gate, comparison); at the top the Prefect flow (pipeline), the CLI, params and evaluation."""

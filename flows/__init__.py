"""Orchestration of ganflow: DVC stages, Ray Train/Tune glue, MLflow registry, Prefect flows, the CLI."""

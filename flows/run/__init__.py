"""A run: training on Ray Train (train drives it, worker is the loop each Ray worker runs), search on Ray
Tune (tune, halving), the local Ray cluster (ray_runtime), and the Ray-free bookkeeping of runs (identity)."""

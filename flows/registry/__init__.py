"""The MLflow side: runs and their metrics (tracking), registered versions and their tags (versions, pyfunc),
the promotion gate (promote) and the comparison of runs (compare)."""

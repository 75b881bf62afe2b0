"""Data: importing a user's images into data/raw (importer), the DVC stages that prepare a dataset and
train its judge (stages), and the loaders every task reads the prepared data through (load). DVC itself is
driven from dvc."""

"""Shared test helpers, imported as `tests.support.<module>` (pytest's `pythonpath` puts the
repository root on sys.path): tiny models (models.py; the session fixtures are in tests/conftest.py),
source and pipeline files (files.py), pipeline documents and shared stage blocks (pipelines.py), running a
pipeline with or without Dagster (runs.py), Dagster's CLIs and a minimal dg project (dg.py)."""

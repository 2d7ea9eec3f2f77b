"""Dagster entry point: every pipeline under curation_assets/defs/."""

from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)

"""Base classes for the pipeline YAML's models (pydantic, no Dagster)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
"""Names used as asset keys and SQL values: lower-case letters, digits, underscores."""


class SpecModel(BaseModel):
    """A YAML block: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

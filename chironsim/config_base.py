"""Base class for every config model: strict (unknown keys are errors) and immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys and is frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""The base of every configuration section: unknown keys refused, values frozen once validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A configuration section: extra keys are an error, and a loaded section cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

# The base of every recipe section: strict (an unknown key is an error that names its path), checked on assignment.
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

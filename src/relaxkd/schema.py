"""The base of every settings model: unknown keys, NaN and infinity are refused."""
from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # no NaN or infinity anywhere: `.nan` proportions or an `.inf` temperature are typos, not settings
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

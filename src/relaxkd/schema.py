"""The base of every settings model: unknown keys, NaN and infinity are refused."""
from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # no NaN or infinity anywhere: `.nan` proportions or an `.inf` temperature are typos, not settings
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def omit_defaults(data: Any, defaults: dict[str, Any]) -> Any:
    """``data`` without the keys that hold their listed default: settings added after artifact keys
    were published stay out of the stable-hashed dumps until someone changes them."""
    if isinstance(data, dict):
        for key, default in defaults.items():
            if key in data and data[key] == default:
                data.pop(key)
    return data

"""The base of every settings model: unknown keys, NaN and infinity are refused; and the one rule
for every path a user types (config settings and command-line options alike)."""
import os
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, model_serializer


class Strict(BaseModel):
    # no NaN or infinity anywhere: `.nan` proportions or an `.inf` temperature are typos, not settings
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    #: settings added after artifact keys were published: left out of dumps while they hold these values
    #: (the key rule, docs/architecture.md "Artifact keys")
    stable_defaults: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _omit_stable_defaults(self, handler: Any) -> Any:
        return omit_defaults(handler(self), self.stable_defaults)


def omit_defaults(data: Any, defaults: dict[str, Any]) -> Any:
    """``data`` without the keys that hold their listed default: settings added after artifact keys
    were published stay out of the stable-hashed dumps until someone changes them."""
    if isinstance(data, dict):
        for key, default in defaults.items():
            if key in data and data[key] == default:
                data.pop(key)
    return data


def expand_home(path: str) -> str:
    """``~`` and ``~user`` expanded as a shell would, so no setting ever makes a folder named ``~``
    (which ``rm -rf ~`` would then "clean up"). Paths without a leading ``~`` are unchanged."""
    if not path.startswith("~"):
        return path
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        raise ValueError(f"cannot expand {path!r}: no home folder is known for it (HOME unset or no such user); "
                         "give the full path")
    return expanded


#: a path setting of the config (run_root, cache_root, data.root, weights files, ...)
UserPath = Annotated[str, AfterValidator(expand_home)]

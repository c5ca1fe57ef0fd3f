"""Config text in, one-line errors out: YAML config files, ``key=value`` overrides and the
message for the first problem validation finds (config.py holds the schema)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from relaxkd import safe_yaml
from relaxkd.errors import UserError


def format_validation_error(err: ValidationError, root: type[BaseModel]) -> str:
    """One line for the first problem pydantic found, naming the key and, for an unknown key, the valid ones."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        parent_fields = _fields_at(root, first["loc"][:-1])
        hint = ""
        if parent_fields:
            close = difflib.get_close_matches(str(first["loc"][-1]), parent_fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            hint += f"; valid keys here: {', '.join(parent_fields)}"
        return f"config: unknown key {loc!r}{hint}"
    if first["type"] in ("model_type", "model_attributes_type", "dict_type"):
        # pydantic's wording names internal classes ("instance of DataConfig"): say what a user types
        if first.get("input") is None:
            return f"config: {loc} is null; remove the override (or the empty key in the config file) to use the defaults"
        return f"config: {loc} must be a section of keys (e.g. {loc}: {{key: value}}), not {type(first['input']).__name__}"
    msg = first["msg"].removeprefix("Value error, ")
    where = f"{loc}: " if loc else ""
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {shorten(repr(got))})"
    return f"config: {where}{msg}{shown}"


def shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit - 1]}… ({len(text)} characters)"


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        candidates = [ann, *(args or ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


#: an override is a value typed on a command line
MAX_OVERRIDE_CHARS = 16384


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> ``(["a", "b"], value)``, the value read as YAML (a plain string if it is not)."""
    if "=" not in text:
        raise UserError(f"override {text!r} is not key=value; write e.g. distill.temperature=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has an empty key; write e.g. distill.temperature=3")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise UserError(
            f"override {key}=... is longer than {MAX_OVERRIDE_CHARS} characters; put large settings in the config file"
        )
    try:
        value = safe_yaml.load(raw, f"override {key}=...") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with every ``key=value`` override set, sections created as needed."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file; every problem with the file is one line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {str(path)!r} is a directory; pass a YAML file such as configs/demo.yaml")
    if not path.exists():
        raise UserError(f"config file {str(path)!r} does not exist; pass a YAML file such as configs/demo.yaml")
    if not (path.is_file() or path.is_fifo() or path.is_char_device()):
        raise UserError(
            f"config file {str(path)!r} is not a regular file (a socket or block device); pass a YAML file such as "
            f"configs/demo.yaml"
        )
    try:
        # a pipe (`relaxkd validate <(cat C)`, /dev/stdin) or device is read once, at most the limit and a byte
        with path.open("rb") as stream:
            raw = stream.read(safe_yaml.MAX_BYTES + 1)
        if len(raw) > safe_yaml.MAX_BYTES:
            raise UserError(f"config file {str(path)!r} is larger than {safe_yaml.MAX_BYTES // 1024} KiB; a config is a few KiB")
        data = safe_yaml.load(raw.decode("utf-8"), f"config file {str(path)!r}") or {}
    except OSError as exc:  # e.g. no read permission
        raise UserError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}; check its permissions") from None
    except UnicodeDecodeError:
        raise UserError(
            f"config file {str(path)!r} is not a text file (not UTF-8); pass a YAML file such as configs/demo.yaml"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {str(path)!r} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of sections, not {type(data).__name__}")
    return data


def default_run_name(data: dict[str, Any], overrides: list[str]) -> str | None:
    """The run name when the command line points a config at other data without naming the run.

    ``relaxkd run configs/demo.yaml data.dataset=imagefolder data.root=~/shapes`` is a run on
    ``shapes``, not the demo: its artifacts go to ``runs/shapes``, never into another run's
    directory. ``name=...`` on the command line always wins.
    """
    keys = [parse_override(text)[0] for text in overrides]
    if any(k == ["name"] for k in keys):
        return None
    if not any(k[:2] in (["data", "root"], ["data", "dataset"]) or k == ["data"] for k in keys):
        return None
    section = data.get("data") or {}
    root = section.get("root") if isinstance(section, dict) else None
    if root:
        stem = Path(str(root)).expanduser().resolve().name
        if stem:
            return stem
    dataset = section.get("dataset") if isinstance(section, dict) else None
    return str(dataset) if dataset else None

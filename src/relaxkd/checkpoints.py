"""Safe reading of weights files and checkpoints, with one-line errors that name both sides.

Every weights file relaxkd takes from the user (backbone weights, CLIP weights when they fail to
load, Lightning resume checkpoints) is read with safetensors or ``torch.load(weights_only=True)``:
a file that pickles Python objects is refused, never executed.
"""
from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from relaxkd.errors import UserError


def _is_safetensors(path: Path) -> bool:
    """By suffix or by header: 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _reason(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split())
    # torch's weights-only refusal is a page of advice; its last clause is the actual reason
    match = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    if match:
        text = match.group(1)
    text = text.split(". ")[0] or type(err).__name__  # the first sentence; the rest is advice for developers
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_checkpoint(path: str | Path, subject: str, advice: str, mmap: bool = False) -> Any:
    """Load ``path`` without running pickled code.

    ``subject`` names the file in errors (e.g. ``"weights file 'x.pt' for tiny_cnn"``), ``advice``
    ends the message of a file that is no checkpoint. ``mmap`` reads tensors lazily (zip format only).
    """
    path = Path(path)
    try:
        if _is_safetensors(path):
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        pickled = re.search(r"GLOBAL (\S+)", str(err))
        if pickled:
            raise UserError(
                f"{subject} pickles Python objects ({pickled.group(1)}), which are never loaded (unsafe: "
                f"torch.load weights_only=True); save model.state_dict() with torch.save or safetensors instead"
            ) from None
        raise UserError(f"{subject} is not a PyTorch or safetensors checkpoint ({_reason(err)}); {advice}") from None
    except Exception as err:  # noqa: BLE001 - zip, safetensors and torch errors all mean "no checkpoint"
        raise UserError(
            f"{subject} is not a PyTorch or safetensors checkpoint (truncated or another kind of file: {_reason(err)}); {advice}"
        ) from None


def tensors_of(loaded: Any) -> dict[str, torch.Tensor] | None:
    """The state dict inside a loaded checkpoint (plain, nested under ``state_dict``, or DDP's
    ``module.`` prefix), or None when it holds no mapping of tensors."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return None
    if all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module."):]: v for k, v in loaded.items()}
    return dict(loaded)


def differences(
    found: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    found_in: str,
    expected_in: str,
    strict: bool = True,
    limit: int = 2,
) -> str:
    """Where two state dicts disagree, for one line: shapes first, then missing/unexpected keys.
    Empty when ``found`` loads into ``expected`` (``strict=False`` tolerates missing keys)."""
    shape = lambda t: list(t.shape)  # noqa: E731
    mismatched = [k for k in expected if k in found and shape(found[k]) != shape(expected[k])]
    missing = [k for k in expected if k not in found] if strict else []
    unexpected = [k for k in found if k not in expected]
    parts = [f"{k} is {shape(found[k])} in {found_in} but {shape(expected[k])} in {expected_in}" for k in mismatched[:limit]]
    if len(mismatched) > limit:
        parts.append(f"{len(mismatched) - limit} more shapes differ")
    some = lambda keys: ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")  # noqa: E731
    if missing:
        parts.append(f"{len(missing)} tensors of {expected_in} missing from {found_in} ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors in {found_in} unknown to {expected_in} ({some(unexpected)})")
    return ", ".join(parts)

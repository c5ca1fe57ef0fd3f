"""Third-party packages whose private parts relaxkd uses, and the one version of each it was tested with.

``data/augment.py``, ``data/draws.py`` and ``data/pil_ops.py`` build on torchvision's private tensor
and PIL ops (``_functional_tensor``, ``autoaugment._apply_op``, ...); ``cli.py`` catches the
exceptions of the click copy typer vendors (``typer._click``). A private API may move in any
release, so ``pyproject.toml`` pins these versions and importing those modules with another version
fails with one line. ``RELAXKD_ALLOW_UNTESTED=1`` skips the check (at your own risk).
"""
from __future__ import annotations

import os
from importlib import metadata

#: package -> the version relaxkd's use of its private API was tested with (pyproject.toml pins it)
TESTED = {"torchvision": "0.29.1", "typer": "0.29.2"}
ALLOW_ENV = "RELAXKD_ALLOW_UNTESTED"


def untested(package: str) -> str | None:
    """One line saying why the installed ``package`` is refused, or None when it is the tested one."""
    if os.environ.get(ALLOW_ENV) == "1":
        return None
    try:
        installed = metadata.version(package)
    except metadata.PackageNotFoundError:
        return f"{package} is not installed; install {package}=={TESTED[package]}"
    if installed.split("+")[0] == TESTED[package]:  # a local build label (+cu130) is the same release
        return None
    return (f"relaxkd uses private parts of {package} and was tested with {package}=={TESTED[package]}, "
            f"but {installed} is installed; run `pip install {package}=={TESTED[package]}` "
            f"(or set {ALLOW_ENV}=1 to try anyway)")


def require_tested(package: str) -> None:
    """Refuse an untested version of ``package`` with one line, before its private API is imported."""
    message = untested(package)
    if message is not None:
        raise ImportError(message)

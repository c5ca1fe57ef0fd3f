"""Private third-party APIs: the tested versions are pinned, and any other version fails with one line."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from relaxkd import versions

from conftest import REPO


def test_pyproject_pins_exactly_the_tested_versions():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for package, tested in versions.TESTED.items():
        assert f"{package}=={tested}" in deps, package


def test_the_installed_versions_are_the_tested_ones():
    assert all(versions.untested(p) is None for p in versions.TESTED)


def test_another_version_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv(versions.ALLOW_ENV, raising=False)
    monkeypatch.setattr(versions.metadata, "version", lambda name: "9.9.0")
    message = versions.untested("torchvision")
    assert message.startswith("relaxkd uses private parts of torchvision and was tested with torchvision==0.29.1, ")
    assert "9.9.0 is installed; run `pip install torchvision==0.29.1`" in message and "\n" not in message
    with pytest.raises(ImportError, match="tested with torchvision==0.29.1"):
        versions.require_tested("torchvision")
    monkeypatch.setenv(versions.ALLOW_ENV, "1")
    assert versions.untested("torchvision") is None


FAKE = ("import importlib.metadata as m; real = m.version; "
        "m.version = lambda n: '9.9.0' if n == {name!r} else real(n); import {module}")


@pytest.mark.parametrize(("package", "module"), [("typer", "relaxkd.cli"), ("torchvision", "relaxkd.data.augment")])
def test_importing_with_another_version_fails_before_the_private_import(package, module):
    env = {k: v for k, v in os.environ.items() if k != versions.ALLOW_ENV}
    env["PYTHONPATH"] = str(REPO / "src")
    result = subprocess.run([sys.executable, "-c", FAKE.format(name=package, module=module)],
                            capture_output=True, text=True, env=env, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert f"was tested with {package}=={versions.TESTED[package]}, but 9.9.0 is installed" in lines[-1]
    if package == "typer":  # the command line: one line, no traceback
        assert lines == [lines[0]] and lines[0].startswith("error: relaxkd uses private parts of typer")

"""The package as installed: its version follows the workspace's, and it ships its type hints."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import exoflow
from conftest import ROOT


def test_the_version_is_the_workspace_version() -> None:
    # [workspace.package] version = "x.y.z" (tomllib is 3.11+, the package supports 3.10).
    cargo = (ROOT / "Cargo.toml").read_text()
    section = cargo[cargo.index("[workspace.package]") :]
    match = re.search(r'^version\s*=\s*"([^"]+)"', section, re.MULTILINE)
    assert match, "no workspace version in Cargo.toml"
    workspace = match.group(1)
    assert exoflow.__version__ == workspace
    assert importlib.metadata.version("exoflow") == workspace
    project = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert f'\nversion = "{workspace}"\n' in project


def test_the_installed_package_ships_its_type_hints() -> None:
    package = Path(exoflow.__file__).parent
    assert (package / "py.typed").is_file()


def test_the_one_runtime_dependency_is_httpx() -> None:
    requires = importlib.metadata.requires("exoflow") or []
    runtime = sorted({re.split(r"[ ;<>=\[]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r})
    assert runtime == ["httpx"]

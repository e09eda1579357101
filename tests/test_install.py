"""Installing as the docs say keeps numpy 2 (issue #21): nvidia-pytriton pins numpy<2, so no extra
requires it; the `serve` extra holds its other dependencies and the wheel goes in on its own, last,
with --no-deps (the Makefile does the same, so `make install` prints no pip ERROR about the pin)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

from glmix_deploy.serve.environment import INSTALL_HINT

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=~!;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_no_extra_pulls_the_wheel_that_pins_numpy_below_2():
    extras = _project()["optional-dependencies"]
    assert all(_name(r) != "nvidia-pytriton" for reqs in extras.values() for r in reqs), extras


def test_the_serve_extra_holds_every_other_dependency_of_the_wheel():
    try:
        required = metadata.requires("nvidia-pytriton") or []
    except metadata.PackageNotFoundError:
        pytest.skip("nvidia-pytriton is not installed: its dependency list is read from its own metadata")
    runtime = {_name(r) for r in required if "extra ==" not in r} - {"numpy"}
    project = _project()
    provided = {_name(r) for r in project["optional-dependencies"]["serve"] + project["dependencies"]}
    assert runtime <= provided, runtime - provided


def test_the_makefile_and_the_hint_install_the_wheel_after_the_project_and_alone():
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP):", 1)[1].split("\ninstall:", 1)[0]
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    wheel = next(i for i, line in enumerate(installs) if "nvidia-pytriton" in line)
    assert "'.[dev,serve]'" in installs[wheel - 1]
    assert "--no-deps" in installs[wheel] and "--no-warn-conflicts" in installs[wheel]
    # Whatever goes in after it (ExecuTorch's wheels) must not make pip re-check its numpy<2 pin.
    assert all("--no-deps" in line or "--no-warn-conflicts" in line for line in installs[wheel + 1:])
    assert INSTALL_HINT.startswith("pip install 'glmix-deploy[serve]' && ")
    assert "--no-deps --no-warn-conflicts 'nvidia-pytriton" in INSTALL_HINT
    assert "--no-deps --no-warn-conflicts 'nvidia-pytriton>=0.5'" in (ROOT / "docs" / "serving.md").read_text()

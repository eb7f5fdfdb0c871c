"""pyproject.toml and environment.yml list the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib

import yaml

from .conftest import REPO


def norm(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*([<>=!~].*)?$", req)
    assert m, req
    return m[1].lower().replace("_", "-"), (m[2] or "").replace(" ", "")


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    py = dict(norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.update(norm(r) for r in dep["pip"] if not r.startswith("-e"))
        elif not dep.startswith(("python", "pip")):
            conda.update([norm(dep)])
    assert {**conda, **pip} == py
    assert set(conda).isdisjoint(pip)


def test_torch_floor_pins():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.14.1" in deps and "torchvision>=0.29.1" in deps

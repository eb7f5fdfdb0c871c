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
    """The same packages; environment.yml pinned (==) to requirements.lock's versions, which
    satisfy pyproject.toml's floors (dev/lock.py check, also run by CI as make check-lock)."""
    import importlib.util

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    py = {norm(r)[0] for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.update(norm(r)[0] for r in dep["pip"] if not r.startswith("-e"))
        elif not dep.startswith(("python", "pip")):
            conda.add(norm(dep)[0])
    assert conda | pip == py and conda.isdisjoint(pip)
    spec = importlib.util.spec_from_file_location("lock", REPO / "dev" / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    assert lock.problems() == []
    assert "torch" in lock.locked() and all(
        "==" in d
        for d in env["dependencies"]
        if isinstance(d, str) and d[0].isalpha() and not d.startswith(("python", "pip"))
    )


def test_torch_floor_pins():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch>=2.14.1" in deps and "torchvision>=0.29.1" in deps


def test_rules_conda_env_resolves_to_this_repository():
    """`--sdm conda`: every rule's conda: directive names environment.yml at the repository
    root, whose `-e .` then resolves to this repository (conda runs pip in the env file's
    folder; Snakemake hands a local env file to conda by its own path, not a copy), and the
    channels hold every conda package (the SLURM executor plugin is on bioconda)."""
    import re as _re

    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    rel = _re.search(r'^ENVIRONMENT = "([^"]+)"', common, _re.M)[1]
    assert (REPO / "workflow" / "rules" / rel).resolve() == (REPO / "environment.yml").resolve()
    assert (REPO / "pyproject.toml").exists()  # what `-e .` installs, next to environment.yml
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):  # no rule points at another env file
        assert set(_re.findall(r"conda:\s*\n\s*(\S+)", smk.read_text())) <= {"ENVIRONMENT"}, smk
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"][:2] == ["conda-forge", "bioconda"] and "nodefaults" in env["channels"]
    assert any(isinstance(d, dict) and "-e ." in d["pip"] for d in env["dependencies"])

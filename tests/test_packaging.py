"""Packaging: pyproject.toml and environment.yml list the same packages at the same versions; the
wheel carries the workflow, and an installed wheel analyzes models and deploys the workflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dnndist import conventions, resources

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


# --------------------------------------------------------------------------- the wheel and an installed workflow
def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The sdist of this repository, then a wheel built from the unpacked sdist (so the sdist
    must hold everything the wheel's build copies into dnndist/_workflow)."""
    out = tmp_path_factory.mktemp("dist")
    build = _run(
        [sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(out)!r}))"],
        REPO,
        os.environ.copy(),
    )
    assert build.returncode == 0, build.stderr
    sdist = out / build.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        # the "data" filter where this Python has it (3.11.4+): no links out, no absolute paths
        tar.extractall(out / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = (out / "src").iterdir()
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
        unpacked,
        os.environ.copy(),
    )
    assert built.returncode == 0, built.stderr
    (whl,) = out.glob("dnndist-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv with the wheel installed (--no-deps): the dependencies come from this
    interpreter's site-packages through a plain path line in a .pth file, which does not run that
    folder's own .pth files, so an editable dnndist installed there stays invisible."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = Path(
        _run(
            [str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            root,
            os.environ.copy(),
        ).stdout.strip()
    )
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))  # lib64 on some systems
    (site / "dnndist-deps.pth").write_text("".join(f"{p}\n" for p in deps))
    installed = _run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        root,
        venv_env(root),
    )
    assert installed.returncode == 0, installed.stderr
    return root


def venv_env(root: Path) -> dict[str, str]:
    """The venv's bin first on PATH (the workflow's jobs run `python -m dnndist`), no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PATH": f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_wheel_carries_the_workflow(wheel):
    """Snakefile, config, schema, rules, report captions, style, profiles and presets, byte for byte."""
    from dnndist import resources

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        packaged = {
            n.removeprefix("dnndist/_workflow/"): z.read(n) for n in names if n.startswith("dnndist/_workflow/")
        }
    assert "dnndist/resources.py" in names and "dnndist/cli.py" in names
    expected = [Path(name) for name in ("Snakefile", "config.yaml", "environment.yml")]
    for folder in ("workflow", "presets"):
        expected += [p.relative_to(REPO) for p in sorted((REPO / folder).rglob("*")) if p.is_file()]
    assert {str(p) for p in expected} >= {
        "workflow/schemas/config.schema.yaml",
        "workflow/rules/common.smk",
        "workflow/report/figures.rst",
        "workflow/report/tables.rst",
        "workflow/style/dnndist.mplstyle",
        "workflow/profiles/slurm/config.yaml",
        "presets/demo.yaml",
        "presets/paper-full.yaml",
    }
    for rel in expected:
        assert packaged.get(str(rel)) == (REPO / rel).read_bytes(), rel
    # the default profile where Snakemake looks for it, beside the Snakefile (a link in the repository)
    assert packaged["profiles/default/config.yaml"] == (REPO / "workflow/profiles/default/config.yaml").read_bytes()
    assert {n.split("/")[0] for n in packaged} == set(resources.DEPLOYMENT)


def test_source_tree_finds_its_own_workflow():
    """Imported from the checkout (or an editable install), the workflow root is the repository
    and the config schema is read from it; the rules' code inputs are the package's own files."""
    from dnndist import DnndistError, resources
    from dnndist import config as dcfg

    if resources.PACKAGED_ROOT.exists():
        pytest.skip("dnndist is installed from a wheel here")
    assert resources.workflow_root() == REPO
    assert resources.schema_path() == REPO / "workflow" / "schemas" / "config.schema.yaml"
    schema, text = dcfg.load_schema(), yaml.safe_load(resources.schema_path().read_text())
    # the init names and the paper's inits come from the init registry, declared once there
    assert schema["$defs"]["init_name"].pop("enum") == list(conventions.INIT_NAMES)
    assert schema["properties"]["inits"].pop("default") == list(conventions.PAPER_INITS)
    assert schema == text
    assert resources.module_path("stats") == Path(dcfg.__file__).parent / "stats.py"
    with pytest.raises(DnndistError, match="no module 'nosuch'"):
        resources.module_path("nosuch")
    assert resources.module_files("stats") == [resources.module_path("stats")]
    package = Path(dcfg.__file__).parent / "data"  # a subpackage: every file of it
    assert resources.module_files("data") == [package / f for f in ("__init__.py", "read.py", "sources.py", "store.py")]
    with pytest.raises(DnndistError, match="no module 'nosuch'"):
        resources.module_files("nosuch")


def test_code_digests_cover_every_dnndist_module_a_stage_imports():
    """A rule's code param digests its modules and every dnndist module they import (read from
    the source, deferred imports too): what importing the stage's module loads is a subset, the
    analysis side's closure holds no torch module, and an edit to an imported module changes it."""
    import subprocess
    import sys

    from dnndist import resources

    for stage in ("extract", "plots"):  # extract imports checkpoints and models; plots imports stats
        probe = (
            f"import sys, dnndist.{stage}; print(' '.join(sorted(m for m in sys.modules if m.startswith('dnndist.'))))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.split()
        top = {m.split(".")[1] for m in loaded}  # dnndist.data.store -> data
        assert top <= set(resources.module_closure(stage)), (stage, top - set(resources.module_closure(stage)))
    assert {"train", "stacked", "models", "inits", "data", "recipe", "checkpoints"} <= set(
        resources.module_closure("train")
    )
    assert not {"train", "stacked", "models", "extract"} & set(resources.module_closure("stats", "plots", "tables"))
    assert "train" not in resources.module_closure("extract")  # nothing of the training loop (issue 7/7)
    assert {"checkpoints", "models"} <= set(resources.module_closure("extract"))  # the model code it runs
    assert resources.code_digest("train") != resources.code_digest("train", "stats")
    # the source-text scan finds what the syntax tree says each module imports
    import ast

    packages = {p.parent.name for p in resources.PACKAGE_DIR.glob("*/__init__.py")}  # data, tables
    for path in sorted(resources.PACKAGE_DIR.glob("*.py")):
        tree_says = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("dnndist"):
                parts = node.module.split(".")
                tree_says |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
            elif isinstance(node, ast.Import):
                tree_says |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dnndist.")}
        modules = {n for n in tree_says if n in {p.stem for p in resources.PACKAGE_DIR.glob("*.py")} | packages}
        assert resources._imported_modules(path.stem) == modules, path.name


def test_init_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    from dnndist import cli

    dest = tmp_path / "deploy"
    assert cli.main(["workflow", "--init", str(dest)]) == 0
    assert (dest / "Snakefile").read_bytes() == (REPO / "Snakefile").read_bytes()
    assert (dest / "profiles" / "default" / "config.yaml").is_file()
    assert (dest / "workflow" / "schemas" / "config.schema.yaml").is_file()
    capsys.readouterr()
    (dest / "presets" / "demo.yaml").write_text("edited\n")
    assert cli.main(["workflow", "--init", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dnndist workflow: error: {dest}/") and "--force" in err and len(err.splitlines()) == 1
    assert (dest / "presets" / "demo.yaml").read_text() == "edited\n"  # nothing written
    assert cli.main(["workflow", "--init", str(dest), "--force"]) == 0
    assert (dest / "presets" / "demo.yaml").read_bytes() == (REPO / "presets" / "demo.yaml").read_bytes()
    (tmp_path / "file").write_text("x")
    assert cli.main(["workflow", "--init", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli.main(["workflow", "--init", str(REPO), "--force"]) == 2  # never onto its own source
    assert "the folder the workflow is copied from" in capsys.readouterr().err


@pytest.mark.slow
def test_installed_wheel_analyzes_and_deploys_the_workflow(venv, tmp_path):
    """From the installed wheel, outside the repository: dnndist resolves to site-packages,
    `dnndist analyze` measures a saved state dict, `dnndist workflow --init` deploys the workflow,
    and Snakemake plans the demo (rules depending on the installed modules) and runs its first job."""
    import torch

    from dnndist import analysis, models
    from dnndist.settings import ModelSettings

    env, py = venv_env(venv), str(venv / "bin" / "python")
    where = _run(
        [py, "-c", "import dnndist, dnndist.resources as r; print(dnndist.__file__); print(r.workflow_root())"],
        tmp_path,
        env,
    )
    assert where.returncode == 0, where.stderr
    module, root = (Path(line) for line in where.stdout.split())
    site = module.parent.parent
    assert site.is_relative_to(venv) and root == site / "dnndist" / "_workflow", where.stdout
    path = _run(["dnndist", "workflow", "--path"], tmp_path, env)
    assert path.returncode == 0 and Path(path.stdout.strip()) == root, path.stderr

    torch.manual_seed(0)
    net = models.paper_cnn(ModelSettings.from_dict({**analysis.MODEL_DEFAULTS, "name": "paper_cnn"}))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    analyzed = _run(
        ["dnndist", "analyze", "--model", "paper_cnn", "--weights", "w.pth", "--out", "a", "--no-figures"],
        tmp_path,
        env,
    )
    assert analyzed.returncode == 0, analyzed.stderr
    assert analyzed.stdout.startswith("paper_cnn: 5 Conv2d/Linear layers, 535,018 weights and biases")
    layers = pd.read_csv(tmp_path / "a" / "layers.csv")
    std = dict(zip(layers["layer"], layers["std"]))
    assert abs(std["conv1"] - net.conv1.weight.detach().std(correction=0).item()) < 1e-5

    init = _run(["dnndist", "workflow", "--init", "d"], tmp_path, env)
    assert init.returncode == 0, init.stderr
    d = tmp_path / "d"
    assert (d / "Snakefile").read_bytes() == (REPO / "Snakefile").read_bytes()
    assert (d / "profiles" / "default" / "config.yaml").is_file() and (d / "presets" / "demo.yaml").is_file()
    again = _run(["dnndist", "workflow", "--init", "d"], tmp_path, env)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "already exists" in again.stderr and "--force" in again.stderr and "Traceback" not in again.stderr
    assert _run(["dnndist", "workflow", "--init", "d", "--force"], tmp_path, env).returncode == 0

    snakemake = [py, "-m", "snakemake"]
    dry = _run([*snakemake, "-n", "--cores", "1", "--configfile", "presets/demo.yaml"], d, env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    # the demo is stacked: its 25 runs train in one job, then each is restored and extracted
    assert re.search(r"^train_stacked_base_1\s+1$", dry.stdout, re.M), dry.stdout
    assert re.search(r"^restore\s+25$", dry.stdout, re.M), dry.stdout
    assert re.search(r"^total\s+\d+$", dry.stdout, re.M), dry.stdout
    assert "src/dnndist" not in dry.stdout
    # the rules' code param digests the installed modules (the same content as the checkout's)
    probe = [py, "-c", "from dnndist import resources as r; print(r.PACKAGE_DIR, r.code_digest('plots', 'outputs'))"]
    where_code, digest = _run(probe, d, env).stdout.split()
    assert Path(where_code) == site / "dnndist" and digest == resources.code_digest("plots", "outputs")
    first = _run(
        [*snakemake, "results/demo/data/dataset.zarr", "--cores", "1", "--configfile", "presets/demo.yaml"], d, env
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert (d / "results" / "demo" / "data" / "dataset.zarr" / "zarr.json").is_file()

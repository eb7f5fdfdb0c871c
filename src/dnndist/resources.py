"""Where the workflow lives: the Snakefile, config.yaml, workflow/ and presets/ (no torch here).

A wheel carries a copy of them as package data (``dnndist/_workflow``, copied at build time by
setup.py); a source tree or an editable install has them at the repository root, two levels above
this package. ``workflow_root()`` finds whichever applies, so the config schema, the rules and the
presets are found the same way from an installed package and from a checkout.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path

from dnndist import DnndistError

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGED_ROOT = PACKAGE_DIR / "_workflow"  # the wheel's copy (setup.py: WORKFLOW_FILES)
# what a runnable deployment holds (setup.py copies the same into the wheel). profiles/ is where
# Snakemake looks for the default profile (beside the Snakefile): a link to workflow/profiles in the
# repository, a copy in the wheel. environment.yml is every rule's conda: file; Snakemake records it
# with each finished job even without --sdm conda, so a deployment without it fails its first job.
DEPLOYMENT = ("Snakefile", "config.yaml", "environment.yml", "workflow", "presets", "profiles")


def _is_root(path: Path) -> bool:
    return (path / "Snakefile").is_file() and (path / "workflow" / "schemas").is_dir()


def workflow_root() -> Path:
    """The folder holding the Snakefile: the packaged copy when installed from a wheel, else the
    repository root of the source tree this package was imported from."""
    if _is_root(PACKAGED_ROOT):
        return PACKAGED_ROOT
    repo = PACKAGE_DIR.parents[1]  # src/dnndist -> the repository root
    if _is_root(repo):
        return repo
    raise DnndistError(
        f"the dnndist workflow is neither packaged ({PACKAGED_ROOT}) nor in a source tree ({repo}); "
        "reinstall dnndist from a wheel or a checkout"
    )


def style_path() -> Path:
    """The shared figure style (the workflow's figures and analyze's)."""
    return workflow_root() / "workflow" / "style" / "dnndist.mplstyle"


def schema_path() -> Path:
    """The config schema (types, ranges, enums, defaults of every key)."""
    return workflow_root() / "workflow" / "schemas" / "config.schema.yaml"


def module_path(name: str) -> Path:
    """The source file of the dnndist module ``name`` (workflow rules depend on it as an input)."""
    path = PACKAGE_DIR / f"{name}.py"
    if not path.is_file():
        raise DnndistError(f"dnndist has no module {name!r} ({path})")
    return path


def module_files(name: str) -> list[Path]:
    """The source files of the dnndist module or subpackage ``name``: the module's file, or every
    .py file of the package (``data``: data/__init__.py, read.py, sources.py, store.py), so that a
    rule depending on ``name`` reruns when any of them is edited."""
    package = PACKAGE_DIR / name
    if (package / "__init__.py").is_file():
        return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    return [module_path(name)]


# `from dnndist import a, b` / `from dnndist.io import x` / `from dnndist.tables.claims import x` /
# `import dnndist.io`, at any indentation
# (deferred imports too); read from the source text, which is 20x faster than parsing it (every
# Snakemake start digests the code) and errs only towards more modules (an import in a docstring)
_FROM = re.compile(r"^[ \t]*from[ \t]+dnndist(?:\.(\w+)(?:\.\w+)*)?[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+dnndist\.(\w+)", re.M)


@functools.cache
def _imported_modules(name: str) -> frozenset[str]:
    """The dnndist modules and subpackages that the source of ``name`` imports, anywhere in it
    (deferred imports inside functions too); nothing is imported here."""
    found = set()
    for path in module_files(name):
        text = path.read_text()
        for module, names in _FROM.findall(text):
            if module:
                found.add(module)
            else:
                found |= set(re.findall(r"\w+", re.sub(r"#[^\n]*", "", names)))  # comments aside
        found |= set(_IMPORT.findall(text))
    return frozenset(
        n for n in found if (PACKAGE_DIR / f"{n}.py").is_file() or (PACKAGE_DIR / n / "__init__.py").is_file()
    )


def module_closure(*names: str) -> list[str]:
    """``names`` and every dnndist module they import, directly or through one another (the
    package's ``__init__``, the error class and the version, aside), sorted: what a rule that runs
    ``names`` computes with."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imported_modules(name) - seen)
    return sorted(seen)


def code_digest(*names: str) -> str:
    """The content of the dnndist modules ``names`` and of every dnndist module they import
    (``module_closure``, ``module_files``) as a short sha256: the workflow's rules take it as a
    param, so editing a module reruns exactly the jobs that compute with it, while touching it, or
    reverting an edit, reruns nothing (Snakemake's params trigger compares contents; an input file
    would be compared by its modification time)."""
    import hashlib

    h = hashlib.sha256()
    for name in module_closure(*names):
        for path in module_files(name):
            h.update(f"{name}/{path.name}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def init_deployment(dest: str | Path, force: bool = False) -> list[Path]:
    """Copy a runnable deployment (Snakefile, config.yaml, environment.yml, workflow/, presets/,
    profiles/) into ``dest``; refuse to overwrite any existing file unless ``force``. Returns the
    top-level paths written."""
    root, dest = workflow_root(), Path(dest)
    if dest.exists() and not dest.is_dir():
        raise DnndistError(f"{dest} exists and is not a folder")
    if dest.resolve() == root.resolve():
        raise DnndistError(f"{dest} is the folder the workflow is copied from; choose another")
    sources = [root / name for name in DEPLOYMENT]
    if not force:
        targets = [dest / f.relative_to(root) for src in sources for f in _files(src)]
        clashes = [t for t in targets if os.path.lexists(t)]
        if clashes:
            more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
            raise DnndistError(f"{clashes[0]} already exists{more}; use --force to overwrite")
    dest.mkdir(parents=True, exist_ok=True)
    for src in sources:
        _copy(src, dest / src.name)
    return [dest / name for name in DEPLOYMENT]


def _copy(src: Path, target: Path) -> None:
    """One top-level entry: a file, a folder (merged into an existing one), or a link kept as a link
    (profiles -> workflow/profiles in a checkout: relative, so it points inside the deployment)."""
    if src.is_symlink():
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        target.symlink_to(src.readlink(), target_is_directory=True)
    elif src.is_dir():
        shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copyfile(src, target)


def _files(path: Path) -> list[Path]:
    """``path`` itself (a file or a link) or every file below a folder."""
    if path.is_symlink() or path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if not p.is_dir() and "__pycache__" not in p.parts)

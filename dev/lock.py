"""environment.yml pinned to requirements.lock, and the offline half of `make check-lock`.

requirements.lock is uv's universal lock (`make upgrade-lock`: `uv pip compile --universal
--generate-hashes` of pyproject.toml with extras [dev]; exact versions and sha256 hashes for
CPython 3.11-3.13 on every platform uv resolves). `make check-lock` asks uv whether the lock
is still what pyproject.toml resolves to; this script checks the rest, offline:

    python dev/lock.py pin-environment   # rewrite environment.yml's pins to the lock's versions
    python dev/lock.py check             # lock, pyproject floors and environment.yml agree (also a test)
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
ENV = REPO / "environment.yml"


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    return {canon(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", LOCK.read_text(), re.M)}


def pin_environment(versions: dict[str, str]) -> None:
    """Rewrite environment.yml's version specifiers to the locked versions (==)."""
    out = []
    for line in ENV.read_text().splitlines():
        m = re.match(r"^(\s*-\s+)([A-Za-z0-9_.\-]+)\s*(?:[<>=!~]=?[^\s#]*)?(.*)$", line)
        if m and canon(m[2]) in versions and not line.strip().startswith("- -e"):
            line = f"{m[1]}{m[2]}=={versions[canon(m[2])]}{m[3]}"
        out.append(line)
    ENV.write_text("\n".join(out) + "\n")


def problems() -> list[str]:
    """Disagreements between the lock, pyproject.toml's floors and environment.yml."""
    from packaging.requirements import Requirement

    versions = locked()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = []
    for req in map(Requirement, project["dependencies"] + project["optional-dependencies"]["dev"]):
        have = versions.get(canon(req.name))
        if have is None:
            out.append(f"{req.name}: in pyproject.toml, not in requirements.lock")
        elif not req.specifier.contains(have, prereleases=True):
            out.append(f"{req.name}: locked {have} does not satisfy pyproject.toml's {req.specifier}")
    for m in re.finditer(r"^\s*-\s+([A-Za-z0-9_.\-]+)==(\S+)", ENV.read_text(), re.M):
        if versions.get(canon(m[1])) != m[2]:
            out.append(f"{m[1]}: environment.yml pins {m[2]}, requirements.lock {versions.get(canon(m[1]))}")
    return out


def main(argv: list[str]) -> int:
    if argv == ["pin-environment"]:
        pin_environment(locked())
        return 0
    if argv == ["check"]:
        found = problems()
        print(
            "\n".join(found)
            or f"requirements.lock ({len(locked())} packages), pyproject.toml and environment.yml agree"
        )
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

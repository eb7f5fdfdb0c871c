"""docs/architecture.md's module table, generated from the source (`python dev/architecture.py`),
so that it cannot fall behind: tests/test_docs.py checks it is what this prints.

Each row: the module (or subpackage), its lines, the first sentence of its docstring, and the
dnndist modules it imports (``dnndist.resources``' scan, which the workflow's code digests use).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
START, END = "<!-- modules: start -->", "<!-- modules: end -->"
sys.path.insert(0, str(REPO / "src"))

from dnndist import resources  # noqa: E402


def _first_sentence(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    m = re.match(r"(.+?\.)(\s|$)", text)
    sentence = m.group(1) if m else text
    if len(sentence) > 150:
        sentence = sentence[:150].rsplit(" ", 1)[0] + " ..."
    return sentence.replace("|", "\\|")


def modules() -> list[tuple[str, Path]]:
    """Every module and subpackage of dnndist, by name (a package by its __init__)."""
    pkg = resources.PACKAGE_DIR
    found = [(p.stem, p) for p in pkg.glob("*.py") if p.stem not in ("__init__", "__main__")]
    found += [(p.parent.name, p) for p in pkg.glob("*/__init__.py")]
    return sorted(found)


def table() -> str:
    rows = ["| module | lines | what it is | imports (dnndist) |", "|---|---|---|---|"]
    for name, path in modules():
        files = resources.module_files(name)
        lines = sum(len(f.read_text().splitlines()) for f in files)
        parts = f" ({', '.join(f.stem for f in files if f.stem != '__init__')})" if len(files) > 1 else ""
        imports = ", ".join(sorted(resources._imported_modules(name) - {name})) or "-"
        rows.append(f"| `{name}`{parts} | {lines} | {_first_sentence(path)} | {imports} |")
    return "\n".join(rows) + "\n"


def with_table(text: str, generated: str) -> str:
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{generated}{END}{rest.split(END, 1)[1]}"


def current(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0].lstrip("\n")


if __name__ == "__main__":
    DOC.write_text(with_table(DOC.read_text(), table()))
    print(f"wrote the module table of {DOC.relative_to(REPO)}")

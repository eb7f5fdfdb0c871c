"""The init registry (each init declared once: ``INITS``) and the gain conventions of the init
formulas, named for captions and store attributes (torch-free).

``torch`` (the default) is what ``torch.nn.init`` gives with its default arguments and the
model's nonlinearity; ``relu`` puts the activation's gain on every init (the convention of
earlier dnndist releases); a number is that gain for every init. ``dnndist.inits`` turns a
convention into the gain of each init.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GAIN_CONVENTIONS = ("torch", "relu")


@dataclass(frozen=True)
class InitSpec:
    """One initialisation, declared once (torch-free; ``dnndist.inits`` draws it from these
    fields): its family (the claims compare families: orthogonal < kaiming < xavier in loss, the
    uniform twins' shape), the distribution of a fresh weight, a constant init's value, whether
    the paper compares it, and its colour in every figure (Okabe-Ito)."""

    name: str
    family: str  # orthogonal, kaiming, xavier, constant, torch (PyTorch's own reset_parameters)
    draw: str  # normal, uniform, orthogonal, constant
    colour: str
    value: float | None = None  # every weight (and, with init.bias auto, every bias) of a constant init
    paper: bool = True  # one of the paper's seven

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


INITS: dict[str, InitSpec] = {
    s.name: s
    for s in (
        InitSpec("orthogonal", "orthogonal", "orthogonal", "#0072B2"),
        InitSpec("kaiming_normal", "kaiming", "normal", "#D55E00"),
        InitSpec("kaiming_uniform", "kaiming", "uniform", "#E69F00"),
        InitSpec("xavier_normal", "xavier", "normal", "#009E73"),
        InitSpec("xavier_uniform", "xavier", "uniform", "#56B4E9"),
        InitSpec("ones", "constant", "constant", "#CC79A7", value=1.0),
        InitSpec("zeros", "constant", "constant", "#000000", value=0.0),
        InitSpec("torch_default", "torch", "uniform", "#999999", paper=False),
    )
}


class _Names(Sequence[str]):
    """The names of the registry's inits that ``keep`` selects, in declaration order, read from
    ``INITS`` on every use: an init added to the registry (a fixture's, a plug-in's) is in every
    derived list at once, in each module that imported the list."""

    def __init__(self, keep: Callable[[InitSpec], bool]) -> None:
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, s in INITS.items() if self._keep(s))

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(self._names())


INIT_NAMES = _Names(lambda s: True)  # the schema's enum (dnndist.config.load_schema fills it in)
PAPER_INITS = _Names(lambda s: s.paper)  # config.yaml's inits: the paper's seven
CONSTANT_INITS = _Names(lambda s: s.draw == "constant")  # every weight the same


def family(name: str, inits: Sequence[str] = INIT_NAMES) -> tuple[str, ...]:
    """The inits of a family (orthogonal, kaiming, xavier, constant, torch), among ``inits``."""
    return tuple(n for n in inits if INITS[n].family == name)


def ordering_pairs() -> list[tuple[str, str]]:
    """The paper's loss ordering orthogonal < kaiming < xavier as pairs (faster, slower): orthogonal
    against each kaiming init, each kaiming init against its xavier twin (the same draw)."""
    kaiming, xavier = family("kaiming"), family("xavier")
    return [(o, k) for o in family("orthogonal") for k in kaiming] + [
        (k, x) for k in kaiming for x in xavier if INITS[k].draw == INITS[x].draw
    ]


def constant_init(value: float) -> str:
    """The constant init that sets every weight to ``value`` (ones: 1, zeros: 0)."""
    return next(n for n, s in INITS.items() if s.draw == "constant" and s.value == value)


ORTHOGONAL, ONES, ZEROS = family("orthogonal")[0], constant_init(1.0), constant_init(0.0)  # the claims' own


def uniform_paper_inits() -> tuple[str, ...]:
    """The paper's uniform inits (kaiming and xavier uniform), whose trained weights the paper
    calls Gaussian-shaped (claim C3)."""
    return tuple(n for n, s in INITS.items() if s.paper and s.draw == "uniform")


# the init label of weights whose init is not known (dnndist analyze of a file without dnndist's
# metadata and without --init): they are still compared with a reference init, named apart
UNKNOWN_INIT = "unknown"


def describe(convention: str | float) -> str:
    """One phrase naming a gain convention."""
    if convention == "torch":
        return "torch (PyTorch's default gains: 1 for xavier and orthogonal, calculate_gain(activation) for kaiming)"
    if convention == "relu":
        return "relu (calculate_gain(activation) for every init)"
    return f"g = {float(convention):g} for every init"


def note(conventions: Mapping[str, Any]) -> str:
    """A caption sentence naming the gain convention of each variant ({variant: convention})."""
    if not conventions:
        return ""
    if len(set(map(str, conventions.values()))) == 1:
        return f"Gain convention: {describe(next(iter(conventions.values())))}."
    return "Gain conventions: " + "; ".join(f"{v}: {describe(c)}" for v, c in conventions.items()) + "."

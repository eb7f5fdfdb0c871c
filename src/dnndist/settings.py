"""Typed settings: frozen dataclasses built once, at the command-line edge, from the resolved
settings JSON that the Snakemake rules pass (``config.run_settings`` / ``extract_settings`` /
``data_settings`` produce those dicts, the stats rules ``{"stats": config["stats"]}``; they stay the
rule params, unchanged).

Every stage function receives the part it needs (``RunSettings.train``, ``.model``, ...);
``to_dict`` gives back the JSON-shaped dict exactly (lists for tuples), so the config hashes
recorded in checkpoints and stores do not change. The config section ``init`` (gain
convention and bias mode) is ``init_scheme`` here; the run's init is ``run.init_name``.
Torch-free: the workflow's Snakefile may import it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dnndist import DnndistError
from dnndist.best import BEST
from dnndist.provenance import config_hash

T = TypeVar("T")


class SettingsError(DnndistError):
    """Resolved settings of the wrong shape; the message names the key."""


def _key(f: dataclasses.Field) -> str:
    """The JSON key of a dataclass field (``init_scheme`` is the config section ``init``)."""
    return f.metadata.get("key", f.name)


def _plain(value: Any) -> Any:
    """JSON-shaped: dataclasses as dicts (by their keys), tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_key(f): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _frozen(value: Any) -> Any:
    """JSON lists as tuples (so a frozen dataclass holds no list)."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _build(cls: type[T], d: Any, where: str) -> T:
    """An instance of dataclass ``cls`` from its JSON dict: nested dataclasses built, lists as
    tuples, values otherwise as given (no coercion: the hash of ``to_dict`` stays that of ``d``)."""
    if not isinstance(d, Mapping):
        raise SettingsError(f"settings key '{where or '.'}': expected a mapping, got {type(d).__name__}")
    fields = {_key(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise SettingsError(f"settings key '{_path(where, unknown[0])}': unknown (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, f in fields.items():
        if key in d:
            hint = hints[f.name]
            nested = isinstance(hint, type) and dataclasses.is_dataclass(hint)
            kwargs[f.name] = _build(hint, d[key], _path(where, key)) if nested else _frozen(d[key])
        elif f.default is dataclasses.MISSING:
            raise SettingsError(f"settings key '{_path(where, key)}': missing")
    return cls(**kwargs)


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@dataclass(frozen=True)
class RunId:
    """Which run: the experiment factors (the init's name is one of them)."""

    variant: str
    init_name: str
    seed: int


@dataclass(frozen=True)
class ModelSettings:
    """The model section (defaults: the config schema's; tests/test_settings.py checks them)."""

    name: str = "paper_cnn"
    weights: str | None = None  # given weights (experiment 2): analysed, not trained
    depth: int = 3
    width: int = 16
    hidden: int = 512
    norm: str = "none"
    activation: str = "relu"
    negative_slope: float = 0.3

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSettings:
        return _build(cls, d, "model")

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class InitScheme:
    """The config section ``init``: gain convention (torch, relu or a number) and bias mode."""

    gain: str | float
    bias: str


@dataclass(frozen=True)
class TrainSettings:
    optimizer: str
    lr: float
    momentum: float
    batch_size: int
    epochs: int
    weight_decay: float
    l1: float
    checkpoints: tuple[int | str, ...]  # epochs, and 'best' (dnndist.best)
    eval_batch_size: int
    device: str
    channels_last: bool
    deterministic: bool
    check_every: int
    diverge_above: float | None  # x ln(classes): a larger training loss is a divergence (None: non-finite only)
    cuda_graphs: bool
    nesterov: bool
    schedule: str  # constant | onecycle (dnndist.recipe)
    warmup: float
    warmup_div: float
    augment: str  # none | flip_crop (dnndist.recipe)
    label_smoothing: float

    @property
    def keeps_best(self) -> bool:
        """Whether the best-validation epoch is kept as a checkpoint too (``best`` in checkpoints)."""
        return BEST in self.checkpoints


@dataclass(frozen=True)
class InputSettings:
    transform: str
    threshold: float


@dataclass(frozen=True)
class SplitSettings:
    """How the store's train split is cut into train and valid (``data.make_splits``)."""

    valid_size: int
    split_seed: int
    valid_split: str

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stack_key(settings: Mapping[str, Any]) -> str:
    """Runs with the same key can be stacked: same variant, every setting but the init and seed
    (of a resolved run settings dict, dnndist.config.run_settings, or RunSettings.to_dict)."""
    keep = {k: v for k, v in settings.items() if k not in ("run", "init")}
    keep["run"] = {"variant": settings["run"]["variant"]}
    return json.dumps(keep, sort_keys=True)


@dataclass(frozen=True)
class RunSettings:
    """Everything one run's training depends on (``config.run_settings``)."""

    run: RunId
    model: ModelSettings
    init_scheme: InitScheme = field(metadata={"key": "init"})
    train: TrainSettings
    input: InputSettings
    split: SplitSettings
    checkpoint_epochs: tuple[int, ...]

    @property
    def given_weights(self) -> str | None:
        """The given weights file (analysed as it is, not trained), or None."""
        return self.model.weights or None

    @property
    def config_hash(self) -> str:
        return config_hash(self.to_dict())

    @property
    def origin(self) -> Origin:
        return Origin(self.run, self.model, self.init_scheme, self.config_hash)

    @property
    def stack_key(self) -> str:
        """Runs with the same key can be stacked: same variant, every setting but the init and seed."""
        return stack_key(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> typing.Self:
        return _build(cls, d, "")

    @classmethod
    def from_json(cls, text: str) -> typing.Self:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """The resolved settings dict these were built from (equal, key for key)."""
        return _plain(self)


@dataclass(frozen=True)
class ExtractSection:
    """The config section ``extract``."""

    splits: tuple[str, ...]
    features: tuple[str, ...]
    sample_size: int
    max_inputs: int | None
    batch_size: int
    histogram_bins: int
    seed: int
    gradient_split: str
    gradient_batches: int
    gradient_batch_size: int
    gradient_target: str
    parameter_gradients: bool
    feature_gradients: bool


@dataclass(frozen=True)
class RandomInputs:
    """The 'random' split: Gaussian inputs of a size and seed."""

    random_size: int
    random_seed: int


@dataclass(frozen=True)
class ExtractSettings(RunSettings):
    """What a run's extraction depends on (``config.extract_settings``): its run settings
    plus the extract section and the random inputs."""

    extract: ExtractSection
    random: RandomInputs


@dataclass(frozen=True)
class DataSettings:
    """What the dataset store depends on (``config.data_settings``): the source and its options."""

    source: str
    options: Mapping[str, Any]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSettings:
        if not isinstance(d, Mapping) or not isinstance(d.get("source"), str):
            raise SettingsError("settings key 'source': missing")
        source = d["source"]
        extra = sorted(set(d) - {"source", source})
        if extra:
            raise SettingsError(f"settings key '{extra[0]}': unknown (the source is {source!r})")
        if not isinstance(d.get(source), Mapping):
            raise SettingsError(f"settings key '{source}': missing (the options of the source)")
        return cls(source, dict(d[source]))

    @classmethod
    def from_json(cls, text: str) -> DataSettings:
        return cls.from_dict(json.loads(text))

    @property
    def config_hash(self) -> str:
        return config_hash(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, self.source: _plain(self.options)}


@dataclass(frozen=True)
class StatsSettings:
    """What a run's statistics depend on (the config section ``stats``; the rules pass it as
    ``{"stats": {...}}``). Defaults: the config schema's (tests/test_settings.py checks them)."""

    near_zero: tuple[float, ...] = (0.001, 0.01)  # absolute thresholds t: the fraction of |w| < t
    near_zero_rel: tuple[float, ...] = (0.1,)  # relative thresholds r: the fraction of |w| < r * std
    claims_at: tuple[int | str, ...] = ()  # stages at which the claims are also decided: epochs, 'best'

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StatsSettings:
        """From the stats settings JSON, ``{"stats": {"near_zero": [...], "near_zero_rel": [...]}}``."""
        if not isinstance(d, Mapping):
            raise SettingsError(f"settings key '.': expected a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - {"stats"})
        if unknown:
            raise SettingsError(f"settings key '{unknown[0]}': unknown (known: stats)")
        if "stats" not in d:
            raise SettingsError("settings key 'stats': missing")
        return _build(cls, d["stats"], "stats")

    @classmethod
    def from_json(cls, text: str) -> StatsSettings:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        return {"stats": _plain(self)}


@dataclass(frozen=True)
class Origin:
    """Where a store's numbers come from, as every store records it: the run, its model, its
    init scheme (the theoretical moments) and the hash of the settings it was made with."""

    run: RunId
    model: ModelSettings
    init_scheme: InitScheme
    config_hash: str

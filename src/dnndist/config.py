"""Configuration: schema validation with defaults, semantic checks, and the grid of runs.

A run is keyed by named experiment factors (variant, init, seed); its settings are the
base sections, then the variant's overrides, then the init's overrides. The resolved
settings of one run are what its training job depends on, so editing one init's (or
one variant's) settings changes only that run's parameters and only its chain reruns.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dnndist import DnndistError, conventions, resources
from dnndist.best import BEST
from dnndist.provenance import config_hash
from dnndist.settings import ModelSettings, stack_key

RUN_SECTIONS = ("model", "init", "train", "input")


class ConfigError(DnndistError):
    """An invalid configuration; the message names the offending key."""


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    """The config schema: ``path``, else the workflow's own (packaged or in the source tree), with
    the init names (an enum) and the paper's inits (the default of ``inits``) filled in from the
    init registry (``conventions.INITS``), where each init is declared once."""
    with open(path or resources.schema_path()) as fh:
        schema = yaml.safe_load(fh)
    schema["$defs"]["init_name"]["enum"] = list(conventions.INIT_NAMES)
    schema["properties"]["inits"]["default"] = list(conventions.PAPER_INITS)
    return schema


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge, everything else in ``over`` replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref supported, got {ref}")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance: dict[str, Any], schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """Fill defaults along ``properties`` (not into free-form maps such as overrides)."""
    root = root if root is not None else schema
    schema = _resolve_ref(schema, root)
    for key, sub in schema.get("properties", {}).items():
        sub_resolved = _resolve_ref(sub, root)
        if key not in instance and "default" in sub_resolved:
            instance[key] = copy.deepcopy(sub_resolved["default"])
        if isinstance(instance.get(key), dict) and "properties" in sub_resolved:
            fill_defaults(instance[key], sub_resolved, root)


def _key(path: Iterable[Any]) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in path]
    return ".".join(parts).replace(".[", "[") or "<root>"


def validate(
    config: Mapping[str, Any], schema: dict[str, Any] | None = None, check_paths: bool = True
) -> dict[str, Any]:
    """Validate ``config`` against the schema, fill defaults, run semantic checks.

    Returns the completed config; raises ConfigError naming the first offending key.
    """
    import jsonschema

    schema = schema or load_schema()
    cfg = copy.deepcopy(dict(config))
    check_size(cfg)
    check_finite(cfg)
    validator = jsonschema.Draft202012Validator(schema)
    _read_exponent_numbers(cfg, validator)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        # oneOf/anyOf errors hide the useful message in their context
        if err.context:
            err = min(err.context, key=lambda e: len(e.absolute_path))
        raise ConfigError(f"config key '{_key(err.absolute_path)}': {err.message}")
    fill_defaults(cfg, schema)
    _one_spelling(cfg)
    cfg["variants"] = expand_variants(
        cfg, validator=jsonschema.Draft202012Validator({**schema["$defs"]["variant"], "$defs": schema["$defs"]})
    )
    _semantic_checks(cfg, check_paths)
    return cfg


# YAML 1.1 (PyYAML, Snakemake's reader) reads 1e-3 and 5E+4 as strings: a float needs a dot there
EXPONENT_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponent_string(error: Any) -> bool:
    """A schema error (or one of an anyOf/oneOf's) about a string such as ``1e-3`` where a number
    is wanted: a number would not have raised it."""
    value = error.instance
    if not (isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value.strip())):
        return False
    return any(
        e.validator == "type"
        and "number" in (e.validator_value if isinstance(e.validator_value, list) else [e.validator_value])
        for e in [error, *(error.context or [])]
    )


INTEGER_STRING = re.compile(r"[-+]?\d+")


def _integer_string(error: Any) -> bool:
    """A schema error about a string of digits where a number is wanted: what Snakemake's
    ``--config seeds=[0,1,2]`` gives (a list of strings)."""
    value = error.instance
    if not (isinstance(value, str) and INTEGER_STRING.fullmatch(value.strip())):
        return False
    wanted = [t for e in [error, *(error.context or [])] if e.validator == "type" for t in _as_list(e.validator_value)]
    return "integer" in wanted or "number" in wanted


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _read_exponent_numbers(cfg: dict[str, Any], validator: Any) -> None:
    """Where the schema wants a number and the config has a string such as ``1e-3`` (YAML 1.1's
    reading of an exponent without a dot) or ``3`` (Snakemake's ``--config seeds=[0,1,2]``), use
    the number it spells."""
    for error in list(validator.iter_errors(cfg)):
        number = float if _exponent_string(error) else int if _integer_string(error) else None
        if number is not None:
            *parents, last = error.absolute_path
            holder: Any = cfg
            for key in parents:
                holder = holder[key]
            holder[last] = number(error.instance.strip())


MAX_CONFIG_VALUES = 100_000  # a dnndist config holds a few hundred values


def check_size(cfg: Mapping[str, Any]) -> None:
    """Refuse a config that spells out more than MAX_CONFIG_VALUES values, as YAML aliases can
    (a 1 KB alias bomb is 387 M values): JSON-schema validation walks every one (59 s for it)."""
    memo: dict[int, int] = {}

    def size(obj: Any) -> int:  # values spelled out, each container counted once (memo)
        if not isinstance(obj, (Mapping, list)):
            return 1
        if id(obj) not in memo:
            n = 1
            for value in obj.values() if isinstance(obj, Mapping) else obj:
                n += size(value)
                if n > MAX_CONFIG_VALUES:
                    break
            memo[id(obj)] = n
        return memo[id(obj)]

    if size(cfg) > MAX_CONFIG_VALUES:
        raise ConfigError(
            f"config: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases used over and over?)"
        )


def check_finite(obj: Any, path: tuple[Any, ...] = (), what: str = "config key", seen: set[int] | None = None) -> None:
    """NaN and infinities pass every JSON-schema number test; refuse them anywhere. A container
    reached twice (a YAML alias) is checked once, so an alias bomb costs nothing here."""
    seen = set() if seen is None else seen
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{what} '{_key(path)}': {obj} is not a finite number")
    if isinstance(obj, (Mapping, list, tuple)):
        if id(obj) in seen:
            return
        seen.add(id(obj))
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            check_finite(v, (*path, k), what, seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, (*path, i), what, seen)


RESULTS_MARKER = ".dnndist-results"


def check_results_dir(results: str | Path) -> None:
    """The results folder is written and partly deleted by reruns: refuse the file-system root,
    the home folder, and an existing non-empty folder that dnndist did not create (no marker)."""
    path = Path(results).expanduser().resolve()
    if path == Path(path.anchor) or path == Path.home().resolve():
        raise ConfigError(
            f"config key 'results': {results!r} is {'the file-system root' if path == Path(path.anchor) else 'your home folder'}; "
            "use a folder of its own, e.g. results/paper"
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key 'results': {results!r} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / RESULTS_MARKER).is_file():
        raise ConfigError(
            f"config key 'results': {results!r} is a non-empty folder that dnndist did not create (no {RESULTS_MARKER}); "
            f"use a new folder, or create {RESULTS_MARKER} in it if it holds an earlier dnndist experiment"
        )


# short, readable labels of factor levels in variant names
_LEVEL_LABELS: dict[tuple[str, Any], str] = {
    ("model.norm", "batch"): "bn",
    ("model.activation", "leaky_relu"): "leaky",
    ("input.transform", "binarize"): "binary",
    ("train.optimizer", "sgd"): "sgd",
    ("train.nesterov", True): "nesterov",
    ("train.schedule", "onecycle"): "onecycle",
    ("train.augment", "flip_crop"): "flipcrop",
}
_FACTOR_LABELS = {
    "train.weight_decay": "l2",
    "train.l1": "l1",
    "model.depth": "depth",
    "model.width": "width",
    "model.negative_slope": "slope",
    "train.lr": "lr",
    "train.label_smoothing": "ls",
    "model.name": "",
}


def level_label(factor: str, value: Any) -> str:
    """Readable label of one factor level, used in variant names: bn, leaky, l2_0.0001, depth6."""
    if (factor, value) in _LEVEL_LABELS:
        return _LEVEL_LABELS[(factor, value)]
    text = f"{value:g}" if isinstance(value, float) else str(value).lower()
    prefix = _FACTOR_LABELS.get(factor, factor.split(".")[-1])
    if not prefix:
        return text
    return f"{prefix}{text}" if isinstance(value, int) and not isinstance(value, bool) else f"{prefix}_{text}"


def expand_variants(cfg: Mapping[str, Any], validator: Any = None) -> dict[str, Any]:
    """The grid crossed into named variants, plus the explicit ones (the default ``{base: {}}``
    is the grid's all-base combination when there is a grid)."""
    import itertools

    grid = cfg.get("grid") or {}
    explicit = dict(cfg["variants"])
    if not grid:
        return explicit
    out: dict[str, Any] = {}
    factors = list(grid)
    for combo in itertools.product(*(grid[f] for f in factors)):
        variant: dict[str, Any] = {}
        labels = []
        for factor, value, levels in zip(factors, combo, (grid[f] for f in factors)):
            section, key = factor.split(".", 1)
            variant.setdefault(section, {})[key] = value
            if value != levels[0]:
                labels.append(level_label(factor, value))
        name = "-".join(labels) or "base"
        if validator is not None:
            errors = list(validator.iter_errors(variant))
            if errors:
                path = ".".join(str(p) for p in errors[0].absolute_path)
                value = errors[0].instance
                hint = (
                    f" (YAML reads {value} as a string: write {float(value)!r}, with a dot)"
                    if _exponent_string(errors[0])
                    else ""
                )
                raise ConfigError(f"config key 'grid.{path}': {errors[0].message}{hint}")
        if name in out:
            raise ConfigError(f"config key 'grid': two combinations are both named {name!r}; use distinct values")
        out[name] = variant
    for name, variant in explicit.items():
        if name == "base" and not variant and "base" in out:
            continue  # the default variant is the grid's base combination
        if name in out:
            raise ConfigError(f"config key 'variants.{name}': the grid already makes a variant of that name")
        out[name] = variant
    return out


def _one_spelling(cfg: dict[str, Any]) -> None:
    """results/demo/ and x/../results/demo are results/demo: one spelling per folder, so that
    Snakemake sees the same outputs, and their changed settings, whatever the config writes."""
    for key in ("results", "resources"):
        if cfg.get(key):
            cfg[key] = os.path.normpath(cfg[key])


def _semantic_checks(cfg: dict[str, Any], check_paths: bool) -> None:
    if check_paths:
        check_results_dir(cfg["results"])
    _check_data(cfg["data"], check_paths)
    all_inits = set(cfg["inits"])
    for variant in cfg["variants"].values():
        all_inits |= set(variant.get("inits", []))
    for init in cfg["overrides"]:
        if init not in all_inits:
            raise ConfigError(f"config key 'overrides.{init}': init '{init}' is not among the inits that are run")
    for run in runs(cfg):  # every resolved run must itself be consistent
        _check_run(cfg, run, check_paths)


def _check_data(data: Mapping[str, Any], check_paths: bool) -> None:
    """The data section: an image folder that exists (a folder or an archive), a validation split
    that leaves training images."""
    if data["source"] == "imagefolder":
        path = data["imagefolder"]["path"]
        if not path:
            raise ConfigError("config key 'data.imagefolder.path': required when data.source is 'imagefolder'")
        if check_paths and not Path(path).exists():
            raise ConfigError(f"config key 'data.imagefolder.path': {path!r} does not exist")
        if check_paths and Path(path).is_file() and not str(path).endswith((".tar.gz", ".tgz", ".tar")):
            raise ConfigError(
                f"config key 'data.imagefolder.path': {path!r} is a file but not a .tar, .tar.gz or .tgz archive"
            )
    if (
        data["source"] == "synthetic"
        and data["valid_split"] == "train"
        and data["valid_size"] >= data["synthetic"]["train_size"]
    ):
        raise ConfigError(
            f"config key 'data.valid_size': {data['valid_size']} leaves no training images "
            f"(data.synthetic.train_size is {data['synthetic']['train_size']})"
        )


def _check_run(cfg: dict[str, Any], run: Run, check_paths: bool) -> None:
    """One resolved run: its training options, claim stages, model, given weights and image size."""
    resolved = run_settings(cfg, run)
    _check_train(resolved["train"], f"variants.{run.variant}.train" if cfg["variants"][run.variant] else "train")
    _check_claims_at(cfg["stats"]["claims_at"], resolved["train"], run)
    model = ModelSettings.from_dict(resolved["model"])
    where = f"variants.{run.variant}" if cfg["variants"][run.variant] else "model"
    if model.name == "paper_cnn" and (model.depth != 3 or model.width != 16):
        raise ConfigError(
            f"config key '{where}.depth': paper_cnn has exactly 3 conv layers of width 16 "
            "(use model.name plain_cnn for other depths or widths)"
        )
    if cfg["stacked"] and model.weights:
        raise ConfigError(
            "config key 'stacked': given weights (model.weights) are analysed, not trained; set stacked: false"
        )
    if cfg["stacked"] and model.name not in ("paper_cnn", "plain_cnn"):
        raise ConfigError(
            f"config key 'stacked': stacked training supports paper_cnn and plain_cnn, not {model.name!r}"
        )
    weights = model.weights
    if weights and check_paths and not Path(weights).is_file():
        what = "is not a file" if Path(weights).exists() else "does not exist"
        raise ConfigError(f"config key '{where if where != 'model' else 'model'}.weights': {weights!r} {what}")
    if weights and not str(weights).endswith((".pth", ".pt", ".safetensors", ".bin")):
        raise ConfigError(
            f"config key 'model.weights': {weights!r} must be a .pth, .pt, .bin or .safetensors state dict"
        )
    image = image_size(cfg)
    if model.name in ("paper_cnn", "plain_cnn") and image % 4:
        raise ConfigError(f"config key 'data': image size {image} must be divisible by 4 for {model.name}")


def _check_train(train: Mapping[str, Any], where: str) -> None:
    """Training options that only make sense together."""
    if train["nesterov"] and (train["optimizer"] != "sgd" or not train["momentum"]):
        raise ConfigError(f"config key '{where}.nesterov': Nesterov momentum needs optimizer sgd with momentum > 0")


def _require_defaults(node: Any, root: dict[str, Any]) -> Any:
    """A copy of a schema in which every property that has a default is required: resolved
    settings always carry it, so a stage given settings without it was handed a partial JSON."""
    if isinstance(node, list):
        return [_require_defaults(n, root) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _require_defaults(v, root) for k, v in node.items()}
    if "properties" in node:
        out["required"] = sorted(k for k, v in node["properties"].items() if "default" in _resolve_ref(v, root))
    return out


_RUN_KEYS = {
    "variant": {"type": "string"},
    "init_name": {"$ref": "#/$defs/init_name"},
    "seed": {"type": "integer", "minimum": 0},
}
_SETTINGS_PROPERTIES: dict[str, dict[str, Any]] = {
    "run": {"type": "object", "properties": _RUN_KEYS, "required": list(_RUN_KEYS), "additionalProperties": False},
    **{sec: {"$ref": f"#/$defs/{sec}"} for sec in RUN_SECTIONS},
    "split": {
        "type": "object",
        "required": ["valid_size", "split_seed", "valid_split"],
        "properties": {
            "valid_size": {"type": "integer", "minimum": 1},
            "split_seed": {"type": "integer", "minimum": 0},
            "valid_split": {"enum": ["train", "test"]},
        },
    },
    "checkpoint_epochs": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
    "extract": {"$ref": "#/$defs/extract"},
    "random": {
        "type": "object",
        "required": ["random_size", "random_seed"],
        "properties": {
            "random_size": {"type": "integer", "minimum": 1},
            "random_seed": {"type": "integer", "minimum": 0},
        },
    },
    "stats": {"$ref": "#/$defs/stats"},
}
SETTINGS_KEYS = {
    "run": ["run", *RUN_SECTIONS, "split", "checkpoint_epochs"],
    "extract": ["run", *RUN_SECTIONS, "split", "checkpoint_epochs", "extract", "random"],
    "stats": ["stats"],
}


LIST_KINDS = {"stacked": "run"}  # --settings kinds that are a list of one kind


def check_settings(settings: Any, kind: str, schema: dict[str, Any] | None = None) -> Any:
    """Validate the resolved settings a stage CLI is given as --settings JSON (kind: run,
    extract, stats, data; stacked = a list of run settings) against the config schema.
    Raises ConfigError naming the first missing or bad key."""
    import jsonschema

    schema = schema or load_schema()
    defs = _require_defaults(schema["$defs"], schema)
    if kind in LIST_KINDS:
        if not isinstance(settings, list) or not settings:
            raise ConfigError(
                f"--settings: expected a non-empty JSON list of {LIST_KINDS[kind]} settings (one per run of the stack group)"
            )
        for i, s in enumerate(settings):
            try:
                check_settings(s, LIST_KINDS[kind], schema)
            except ConfigError as exc:
                raise ConfigError(f"run [{i}]: {exc}") from None
        return settings
    if kind == "data":
        source = settings.get("source") if isinstance(settings, Mapping) else None
        props = {"source": schema["$defs"]["data"]["properties"]["source"]}
        if isinstance(source, str) and source in schema["$defs"]["data"]["properties"]:
            props[source] = defs["data"]["properties"][source]
        top = {"type": "object", "properties": props, "required": list(props)}
    else:
        keys = SETTINGS_KEYS[kind]
        top = {"type": "object", "properties": {k: _SETTINGS_PROPERTIES[k] for k in keys}, "required": keys}
    check_finite(settings, what="--settings key")
    validator = jsonschema.Draft202012Validator({**top, "$defs": defs})
    errors = sorted(
        validator.iter_errors(settings), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        err = min(errors[0].context, key=lambda e: len(e.absolute_path)) if errors[0].context else errors[0]
        raise ConfigError(f"--settings key '{_key(err.absolute_path)}': {err.message}")
    return settings


def image_size(cfg: Mapping[str, Any]) -> int:
    data = cfg["data"]
    if data["source"] == "imagefolder":
        return int(data["imagefolder"]["image_size"])
    if data["source"] == "synthetic":
        return int(data["synthetic"]["image_size"])
    return 32


@dataclass(frozen=True, order=True)
class Run:
    variant: str
    init: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}/{self.init}/seed{self.seed}"


def runs(cfg: Mapping[str, Any]) -> list[Run]:
    """All runs of the experiment: variants x inits x seeds (seeds may differ per init)."""
    out = []
    for vname, variant in cfg["variants"].items():
        for init in variant.get("inits", cfg["inits"]):
            seeds = cfg["overrides"].get(init, {}).get("seeds", variant.get("seeds", cfg["seeds"]))
            out.extend(Run(vname, init, int(s)) for s in seeds)
    return out


@dataclass(frozen=True)
class StackGroup:
    """Runs trained together as one stack: same variant and settings but the init and seed."""

    name: str  # e.g. base-1: readable, stable for a given config
    runs: tuple[Run, ...]


def stack_groups(
    cfg: Mapping[str, Any],
    of: Sequence[Run] | None = None,
    settings_of: Callable[[Run], Mapping[str, Any]] | None = None,
) -> list[StackGroup]:
    """The runs of the experiment (or those of them in ``of``: the workflow's runs that need
    training, dnndist.runcache) grouped for stacked training, in run order, at most ``stack_max``
    runs per group, named ``<variant>-<n>``. ``settings_of``: the runs' resolved settings where
    the caller has them (the workflow's, worked out once per run)."""
    by_key: dict[str, dict[str, list[Run]]] = {}
    for run in runs(cfg) if of is None else of:
        key = stack_key(settings_of(run) if settings_of else run_settings(cfg, run))
        by_key.setdefault(run.variant, {}).setdefault(key, []).append(run)
    out = []
    size = int(cfg["stack_max"])
    for variant, groups in by_key.items():
        chunks = [members[i : i + size] for members in groups.values() for i in range(0, len(members), size)]
        out.extend(StackGroup(f"{variant}-{n}", tuple(chunk)) for n, chunk in enumerate(chunks, start=1))
    return out


def checkpoint_epochs(train: Mapping[str, Any]) -> list[int]:
    """The scheduled checkpoint epochs (0 and the last always; 'best' is kept beside them)."""
    epochs = int(train["epochs"])
    return sorted({0, epochs} | {int(e) for e in train["checkpoints"] if e != BEST and e <= epochs})


def _check_claims_at(stages: Sequence[int | str], train: Mapping[str, Any], run: Run) -> None:
    """stats.claims_at names checkpoints that every run's training keeps (its train settings after
    variants and per-init overrides): epochs among train.checkpoints, 'best' only with 'best' there."""
    kept = checkpoint_epochs(train)
    whose = f" (run {run.variant}/{run.init}/seed{run.seed})"
    for stage in stages:
        if stage == BEST and BEST not in train["checkpoints"]:
            raise ConfigError(f"config key 'stats.claims_at': 'best' needs 'best' in train.checkpoints{whose}")
        if stage != BEST and stage not in kept and stage in train["checkpoints"]:
            raise ConfigError(
                f"config key 'train.checkpoints': epoch {stage} is after the last epoch (train.epochs is "
                f"{train['epochs']}), so it is not kept, and stats.claims_at asks for it{whose}"
            )
        if stage != BEST and stage not in kept:
            after = [e for e in train["checkpoints"] if e != BEST and e > train["epochs"]]
            dropped = f"; {after} after the last epoch, {train['epochs']}, are not kept" if after else ""
            raise ConfigError(
                f"config key 'stats.claims_at': epoch {stage} is not a checkpoint "
                f"(train.checkpoints keeps {kept}{dropped}{whose})"
            )


def run_settings(cfg: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """Resolved settings of one run: everything its training job depends on."""
    if run.variant not in cfg["variants"]:
        raise ConfigError(f"config key 'variants': unknown variant {run.variant!r}")
    variant = cfg["variants"][run.variant]
    init_over = cfg["overrides"].get(run.init, {})
    sections = {}
    for sec in RUN_SECTIONS:
        merged = deep_merge(cfg[sec], variant.get(sec, {}))
        sections[sec] = deep_merge(merged, init_over.get(sec, {}))
    data = cfg["data"]
    return {
        "run": {"variant": run.variant, "init_name": run.init, "seed": run.seed},
        **sections,
        "split": {
            "valid_size": data["valid_size"],
            "split_seed": data["split_seed"],
            "valid_split": data["valid_split"],
        },
        # given weights are analysed as they are: one checkpoint, "epoch 0"
        "checkpoint_epochs": [0] if sections["model"].get("weights") else checkpoint_epochs(sections["train"]),
    }


def extract_settings(cfg: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """What a run's extraction jobs depend on: the run's settings plus the extract section."""
    data = cfg["data"]
    return {
        **run_settings(cfg, run),
        "extract": dict(cfg["extract"]),
        "random": {"random_size": data["random_size"], "random_seed": data["random_seed"]},
    }


def flat_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A settings dict as {"train.lr": 0.001, ...} (lists and empty sections are values)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_line(settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """One line for resolved settings: their digest, then the run's keys and every setting that
    differs from ``defaults`` (flat_settings of the schema's), e.g. `3f2a... run.init_name="ones"
    run.seed=0 train.epochs=50 train.lr=0.0005`. The workflow's rules give it to Snakemake to
    compare: a changed setting reruns the job (the digest changes), and the reason Snakemake
    prints (the param before and now) shows the changed key instead of the whole settings twice."""
    shown = [
        f"{key}={json.dumps(value, sort_keys=True)}"
        for key, value in sorted(flat_settings(settings).items())
        if key.startswith("run.") or key not in defaults or defaults[key] != value
    ]
    return " ".join([config_hash(settings), *shown])


def default_settings() -> dict[str, Any]:
    """flat_settings of a run of the default config (the schema's defaults, extract settings)."""
    return flat_settings(extract_settings(validate({}, check_paths=False), Run("base", "zeros", 0)))


def data_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings the dataset store depends on (only the active source's)."""
    data = cfg["data"]
    source = data["source"]
    return {"source": source, source: data[source]}


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML keeps the last one silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise ConfigError(
                    f"config key '{key}': given twice in one mapping (line {key_node.start_mark.line + 1})"
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """One config file's mapping, read strictly: a key given twice in a mapping is refused (YAML
    keeps the last silently), and so are unreadable, non-text, non-YAML and non-mapping files.
    The Snakefile reads every ``--configfile`` through this too (Snakemake's loader keeps the
    last of a duplicate key). An empty file is refused, as Snakemake refuses it."""
    try:
        with open(path) as fh:
            layer = yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8)") from None
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if layer is None:  # Snakemake refuses an empty --configfile too ("keys at top level")
        raise ConfigError(f"config file {path} is empty: an overlay needs at least one key")
    if not isinstance(layer, Mapping):
        raise ConfigError(f"config file {path}: expected a mapping of config keys, got a {type(layer).__name__}")
    return dict(layer)


def load(
    paths: Iterable[str | Path], overrides: Mapping[str, Any] | None = None, check_paths: bool = True
) -> dict[str, Any]:
    """Load config.yaml plus overlays (like snakemake --configfile), then validate (``check_paths``:
    also that the data and weights files it names exist)."""
    cfg: dict[str, Any] = {}
    for path in paths:
        cfg = deep_merge(cfg, read_config_file(path))
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate(cfg, check_paths=check_paths)

"""Typed settings (dnndist.settings): built once from the resolved settings JSON, they give
that JSON back exactly (so config hashes and the rule params do not move), name a bad key in
one line, and are the only place that subscripts a settings dict. Also the house rule that no
function in src/dnndist is longer than 60 lines."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from dnndist import config as dcfg
from dnndist.provenance import config_hash
from dnndist.settings import (
    DataSettings,
    ExtractSettings,
    ModelSettings,
    RunSettings,
    SettingsError,
    StatsSettings,
)

from .conftest import tiny_config

SRC = Path(__file__).resolve().parents[1] / "src" / "dnndist"
MAX_LINES = 60


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    variants = {"base": {}, "given": {"model": {"name": "resnet18", "weights": str(root / "w.pth")}}}
    return dcfg.validate(
        tiny_config(root, variants=variants, init={"gain": 0.5}, train={"lr": 1, "weight_decay": 0}),
        check_paths=False,
    )


def test_round_trip_is_exact(cfg):
    """to_dict gives the resolved dict back key for key, value for value and type for type
    (an int lr stays an int), so the config hash recorded in checkpoints and stores is unchanged."""
    for run in dcfg.runs(cfg):
        for cls, d in ((RunSettings, dcfg.run_settings(cfg, run)), (ExtractSettings, dcfg.extract_settings(cfg, run))):
            s = cls.from_dict(d)
            assert json.dumps(s.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)
            assert s.config_hash == config_hash(d)
            assert cls.from_json(json.dumps(d)) == s
    data = dcfg.data_settings(cfg)
    assert DataSettings.from_dict(data).to_dict() == data


def test_parts_and_names(cfg):
    base, given = (
        RunSettings.from_dict(dcfg.run_settings(cfg, dcfg.Run(v, "kaiming_normal", 0))) for v in ("base", "given")
    )
    assert base.run.init_name == "kaiming_normal" and base.init_scheme.gain == 0.5
    assert base.given_weights is None and given.given_weights == given.model.weights
    assert given.checkpoint_epochs == (0,)  # given weights: one checkpoint
    assert base.split.kwargs() == {"valid_size": 100, "split_seed": 0, "valid_split": "train"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.train.lr = 2  # type: ignore[misc]


def test_stack_key_ignores_only_the_init_and_seed(cfg):
    keys = {
        r: RunSettings.from_dict(dcfg.run_settings(cfg, r)).stack_key for r in dcfg.runs(cfg) if r.variant == "base"
    }
    assert len(set(keys.values())) == 1 and len(keys) == 2
    s = RunSettings.from_dict(dcfg.run_settings(cfg, dcfg.Run("base", "kaiming_normal", 0)))
    other = dataclasses.replace(s, train=dataclasses.replace(s.train, lr=0.5))
    assert other.stack_key != s.stack_key


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.pop("model"), "settings key 'model': missing"),
        (lambda d: d["train"].update(lrr=1), "settings key 'train.lrr': unknown"),
        (lambda d: d.update(model=[1]), "settings key 'model': expected a mapping, got list"),
        (lambda d: d["run"].pop("seed"), "settings key 'run.seed': missing"),
    ],
)
def test_bad_settings_name_the_key(cfg, mutate, message):
    d = dcfg.run_settings(cfg, dcfg.Run("base", "kaiming_normal", 0))
    mutate(d)
    with pytest.raises(SettingsError, match=re.escape(message)):
        RunSettings.from_dict(d)


def test_bad_data_settings_name_the_key():
    with pytest.raises(SettingsError, match="settings key 'source': missing"):
        DataSettings.from_dict({"synthetic": {}})
    with pytest.raises(SettingsError, match="settings key 'cifar10': unknown"):
        DataSettings.from_dict({"source": "synthetic", "synthetic": {}, "cifar10": {}})


def test_model_defaults_are_the_schema_defaults():
    props = dcfg.load_schema()["$defs"]["model"]["properties"]
    fields = {f.name: f.default for f in dataclasses.fields(ModelSettings)}
    assert fields == {k: v["default"] for k, v in props.items()}


def test_stats_settings_round_trip_and_defaults(cfg):
    """The stats rules' JSON ({"stats": config["stats"]}) comes back exactly; the defaults are the schema's."""
    d = {"stats": cfg["stats"]}
    s = StatsSettings.from_dict(d)
    assert json.dumps(s.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)
    assert StatsSettings.from_json(json.dumps(d)) == s and isinstance(s.near_zero, tuple)
    props = dcfg.load_schema()["$defs"]["stats"]["properties"]
    assert StatsSettings().to_dict() == {"stats": {k: v["default"] for k, v in props.items()}}
    assert StatsSettings.from_dict({"stats": {}}) == StatsSettings()


@pytest.mark.parametrize(
    "d,message",
    [
        ({}, "settings key 'stats': missing"),
        ({"stats": {}, "model": {}}, "settings key 'model': unknown"),
        ({"stats": {"near_zeros": [0.1]}}, "settings key 'stats.near_zeros': unknown"),
        ({"stats": [0.1]}, "settings key 'stats': expected a mapping, got list"),
    ],
)
def test_bad_stats_settings_name_the_key(d, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        StatsSettings.from_dict(d)


def test_no_settings_subscripting_outside_the_settings_module():
    """Stage functions receive typed parts; only dnndist.settings reads a settings dict by key."""
    hits = [
        f"{p.relative_to(SRC)}:{n}: {line.strip()}"
        for p in sorted(SRC.rglob("*.py"))
        if p.relative_to(SRC).as_posix() != "settings.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "settings[" in line
    ]
    assert hits == []


def _long_functions() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in sorted(SRC.rglob("*.py")):  # packages too (data/read.py)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_LINES:
                    out.setdefault(p.relative_to(SRC).as_posix(), set()).add(node.name)
    return out


def test_no_function_is_longer_than_60_lines():
    """Functions stay short: none has more than MAX_LINES lines (docstring included)."""
    assert _long_functions() == {}


def test_extraction_and_analysis_import_nothing_from_training():
    """The checkpoints, their reader and the device choice live in dnndist.checkpoints, so that
    extraction and analyze need nothing from the training loop (issue 7/7)."""
    import subprocess
    import sys

    code = (
        "import sys, dnndist.extract, dnndist.analysis; print(sorted(m for m in sys.modules if m == 'dnndist.train'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"

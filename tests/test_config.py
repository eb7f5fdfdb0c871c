"""Config validation: defaults, the grid of runs, per-init overrides, rejected configs."""

from __future__ import annotations

import copy

import pytest
import yaml

from dnndist import config as dcfg

from .conftest import REPO, snakemake, tiny_config, write_yaml


def base_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_the_paper_experiment():
    cfg = dcfg.validate(base_config())
    assert cfg["data"]["source"] == "cifar10"
    assert cfg["inits"] == ["orthogonal", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "ones", "zeros"]
    assert (cfg["train"]["optimizer"], cfg["train"]["lr"], cfg["train"]["batch_size"], cfg["train"]["epochs"]) == ("adam", 1e-4, 64, 50)
    assert cfg["train"]["weight_decay"] == 0 and cfg["train"]["l1"] == 0
    assert len(dcfg.runs(cfg)) == 7


def test_every_schema_key_has_type_description_default():
    schema = dcfg.load_schema()
    missing = []

    def walk(node, path):
        node = dcfg._resolve_ref(node, schema)
        for key, sub in node.get("properties", {}).items():
            sub_r = dcfg._resolve_ref(sub, schema)
            if path and path[0] in ("run_overrides", "variant"):
                continue
            if "default" not in sub_r or "description" not in sub_r and "properties" not in sub_r:
                missing.append(".".join(path + [key]))
            if "type" not in sub_r and "oneOf" not in sub_r:
                missing.append(".".join(path + [key]) + " (type)")
            walk(sub_r, path + [key])

    walk(schema, [])
    assert missing == []


def test_defaults_fill_empty_config():
    cfg = dcfg.validate({})
    assert cfg["model"]["name"] == "paper_cnn" and cfg["init"]["gain"] == "auto"
    assert cfg["data"]["cifar10"]["md5"] == "c32a1d4ab5d03f1284b67883e8d87530"


def test_init_override_changes_only_that_run():
    cfg = dcfg.validate({**base_config(), "overrides": {"ones": {"train": {"lr": 1e-5}, "seeds": [0, 1]}}})
    runs = dcfg.runs(cfg)
    assert [r.seed for r in runs if r.init == "ones"] == [0, 1]
    assert len(runs) == 8
    ones = dcfg.run_settings(cfg, dcfg.Run("base", "ones", 1))
    kn = dcfg.run_settings(cfg, dcfg.Run("base", "kaiming_normal", 0))
    assert ones["train"]["lr"] == 1e-5 and kn["train"]["lr"] == 1e-4
    assert ones["train"]["batch_size"] == 64  # merged, not replaced
    base = dcfg.run_settings(dcfg.validate(base_config()), dcfg.Run("base", "kaiming_normal", 0))
    assert base == kn


def test_variants_override_base_and_restrict_inits():
    cfg = dcfg.validate({**base_config(), "variants": {"base": {}, "bn": {"model": {"norm": "batch"}, "inits": ["kaiming_normal"]}}})
    runs = dcfg.runs(cfg)
    assert [r.name for r in runs if r.variant == "bn"] == ["bn/kaiming_normal/seed0"]
    assert dcfg.run_settings(cfg, runs[-1])["model"]["norm"] == "batch"


def test_checkpoint_epochs_include_zero_and_last():
    assert dcfg.checkpoint_epochs({"epochs": 7, "checkpoints": [2, 5, 10]}) == [0, 2, 5, 7]


BAD = [
    ({"inits": ["kaiming_normal", "he_normal"]}, "inits[1]"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"epochs": -3}}, "train.epochs"),
    ({"train": {"lr": "1e-4"}}, "train.lr"),
    ({"train": {"lr": 0}}, "train.lr"),
    ({"train": {"batch_size": 6.5}}, "train.batch_size"),
    ({"data": {"source": "imagefolder"}}, "data.imagefolder.path"),
    ({"data": {"source": "imagefolder", "imagefolder": {"path": "/nonexistent/images"}}}, "data.imagefolder.path"),
    ({"data": {"source": "mnist"}}, "data.source"),
    ({"model": {"name": "vgg"}}, "model.name"),
    ({"model": {"name": "paper_cnn", "depth": 6}}, "model.depth"),
    ({"model": {"activation": "gelu"}}, "model.activation"),
    ({"init": {"gain": -1}}, "init.gain"),
    ({"train": {"lrr": 0.1}}, "train"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"overrides": {"ones": {"train": {"lr": "fast"}}}}, "overrides.ones.train.lr"),
    ({"overrides": {"torch_default": {"train": {"lr": 0.1}}}}, "overrides.torch_default"),
    ({"overrides": {"bogus": {}}}, "overrides"),
    ({"data": {"source": "synthetic", "valid_size": 5000, "synthetic": {"train_size": 1000}}}, "data.valid_size"),
    ({"train": {"device": "gpu"}}, "train.device"),
    ({"variants": {"Bad Name": {}}}, "variants"),
    ({"data": {"cifar10": {"md5": "xyz"}}}, "data.cifar10.md5"),
]


@pytest.mark.parametrize("patch,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(patch, key):
    cfg = dcfg.deep_merge(base_config(), patch)
    with pytest.raises(dcfg.ConfigError) as err:
        dcfg.validate(cfg)
    assert f"config key '{key}" in str(err.value), str(err.value)


# A subset through Snakemake itself: rejected before any job, message names the key.
SNAKE_BAD = [BAD[i] for i in (0, 1, 3, 6, 7, 10, 16)]


@pytest.mark.parametrize("patch,key", SNAKE_BAD, ids=[k for _, k in SNAKE_BAD])
def test_snakemake_rejects_bad_config_before_any_job(tmp_path, patch, key):
    cfg = copy.deepcopy(tiny_config(tmp_path / "results"))
    cfg = dcfg.deep_merge(cfg, patch)
    write_yaml(tmp_path / "bad.yaml", cfg)
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "invalid configuration" in out and key in out, out
    assert not (tmp_path / "results").exists()  # no job ran

"""Config validation: defaults, the grid of runs, per-init overrides, rejected configs."""

from __future__ import annotations

import copy

import pytest
import yaml

from dnndist import config as dcfg
from dnndist import preflight

from .conftest import REPO, snakemake, tiny_config, write_yaml


def base_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_the_paper_experiment():
    cfg = dcfg.validate(base_config())
    assert cfg["data"]["source"] == "cifar10"
    assert cfg["inits"] == [
        "orthogonal",
        "kaiming_normal",
        "kaiming_uniform",
        "xavier_normal",
        "xavier_uniform",
        "ones",
        "zeros",
    ]
    assert (cfg["train"]["optimizer"], cfg["train"]["lr"], cfg["train"]["batch_size"], cfg["train"]["epochs"]) == (
        "adam",
        1e-4,
        64,
        50,
    )
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
    assert cfg["model"]["name"] == "paper_cnn" and cfg["init"]["gain"] == "torch"
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
    cfg = dcfg.validate(
        {**base_config(), "variants": {"base": {}, "bn": {"model": {"norm": "batch"}, "inits": ["kaiming_normal"]}}}
    )
    runs = dcfg.runs(cfg)
    assert [r.name for r in runs if r.variant == "bn"] == ["bn/kaiming_normal/seed0"]
    assert dcfg.run_settings(cfg, runs[-1])["model"]["norm"] == "batch"


def test_checkpoint_epochs_include_zero_and_last():
    assert dcfg.checkpoint_epochs({"epochs": 7, "checkpoints": [2, 5, 10]}) == [0, 2, 5, 7]


BAD = [
    ({"inits": ["kaiming_normal", "he_normal"]}, "inits[1]"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"epochs": -3}}, "train.epochs"),
    ({"train": {"lr": "1e-4 per step"}}, "train.lr"),
    ({"train": {"lr": 0}}, "train.lr"),
    ({"train": {"batch_size": 6.5}}, "train.batch_size"),
    ({"data": {"source": "imagefolder"}}, "data.imagefolder.path"),
    ({"data": {"source": "imagefolder", "imagefolder": {"path": "/nonexistent/images"}}}, "data.imagefolder.path"),
    ({"data": {"source": "mnist"}}, "data.source"),
    ({"model": {"name": "vgg"}}, "model.name"),
    ({"model": {"name": "paper_cnn", "depth": 6}}, "model.depth"),
    ({"model": {"activation": "gelu"}}, "model.activation"),
    ({"init": {"gain": -1}}, "init.gain"),
    ({"init": {"gain": "auto"}}, "init.gain"),
    ({"data": {"valid_split": "holdout"}}, "data.valid_split"),
    ({"train": {"lrr": 0.1}}, "train"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"overrides": {"ones": {"train": {"lr": "fast"}}}}, "overrides.ones.train.lr"),
    ({"overrides": {"torch_default": {"train": {"lr": 0.1}}}}, "overrides.torch_default"),
    ({"overrides": {"bogus": {}}}, "overrides"),
    (
        {
            "data": {
                "source": "synthetic",
                "valid_split": "train",
                "valid_size": 5000,
                "synthetic": {"train_size": 1000},
            }
        },
        "data.valid_size",
    ),
    ({"train": {"device": "gpu"}}, "train.device"),
    ({"variants": {"Bad Name": {}}}, "variants"),
    ({"data": {"cifar10": {"md5": "xyz"}}}, "data.cifar10.md5"),
    ({"stacked": True, "model": {"name": "resnet18_cifar"}}, "stacked"),
    ({"model": {"name": "resnet18", "weights": "/nonexistent/resnet18.pth"}}, "model.weights"),
    ({"extract": {"gradient_target": "logits"}}, "extract.gradient_target"),
    ({"plots": {"emission_layers": "conv1"}}, "plots.emission_layers"),
    ({"data": {"imagefolder": {"normalize": "cifar"}}}, "data.imagefolder.normalize"),
]


@pytest.mark.parametrize("patch,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(patch, key):
    cfg = dcfg.deep_merge(base_config(), patch)
    with pytest.raises(dcfg.ConfigError) as err:
        dcfg.validate(cfg)
    assert f"config key '{key}" in str(err.value), str(err.value)


# A subset through Snakemake itself: rejected before any job, message names the key.
SNAKE_BAD = [BAD[i] for i in (0, 1, 3, 6, 7, 10, 16)]


@pytest.mark.slow
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


GRID = {
    "model.norm": ["none", "batch"],
    "model.activation": ["relu", "leaky_relu"],
    "train.weight_decay": [0.0, 1.0e-4],
    "train.l1": [0.0, 1.0e-5],
}


def test_grid_variant_names_are_readable_unique_and_stable():
    cfg = dcfg.validate(
        {**base_config(), "grid": GRID, "variants": {"base": {}, "binary": {"input": {"transform": "binarize"}}}}
    )
    names = list(cfg["variants"])
    assert len(names) == len(set(names)) == 17
    assert names[0] == "base" and "bn-leaky-l2_0.0001-l1_1e-05" in names and names[-1] == "binary"
    assert cfg["variants"]["bn-leaky"] == {
        "model": {"norm": "batch", "activation": "leaky_relu"},
        "train": {"weight_decay": 0.0, "l1": 0.0},
    }
    # adding a level or a factor keeps every existing name and its settings
    more = {**GRID, "train.l1": [0.0, 1.0e-5, 1.0e-4], "input.transform": ["as_is", "binarize"]}
    cfg2 = dcfg.validate({**base_config(), "grid": more})
    for name in names[:-1]:
        assert name in cfg2["variants"], name
        run = dcfg.Run(name, "kaiming_normal", 0)
        assert dcfg.run_settings(cfg2, run) == dcfg.run_settings(cfg, run), name
    assert "l1_0.0001" in cfg2["variants"] and "binary" in cfg2["variants"]


@pytest.mark.parametrize(
    "grid,key",
    [
        ({"model.norm": ["none", "layer"]}, "grid.model.norm"),
        ({"train.weight_decay": [0.0, "big"]}, "grid.train.weight_decay"),
        ({"optim.lr": [1.0]}, "grid"),
        ({"model.norm": []}, "grid.model.norm"),
    ],
)
def test_bad_grids_name_the_key(grid, key):
    with pytest.raises(dcfg.ConfigError) as err:
        dcfg.validate({**base_config(), "grid": grid})
    assert f"config key '{key}" in str(err.value), str(err.value)


@pytest.mark.slow
def test_adding_one_variant_plans_only_its_jobs(tmp_path):
    from .conftest import snakemake, tiny_config, write_yaml

    cfg = tiny_config(tmp_path / "results", inits=["kaiming_normal"], grid={"model.norm": ["none", "batch"]})
    write_yaml(tmp_path / "a.yaml", cfg)
    snakemake(tmp_path, "--cores", "1", "--configfile", str(tmp_path / "a.yaml"), "--touch", check=False)
    plan_a = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "a.yaml")).stdout
    assert "runs/bn/kaiming_normal/seed0" in plan_a and "runs/base/kaiming_normal/seed0" in plan_a
    cfg["grid"]["model.activation"] = ["relu", "leaky_relu"]
    write_yaml(tmp_path / "b.yaml", cfg)
    # mark the first grid's runs complete, then plan with one factor more
    import subprocess

    from .conftest import BIN, REPO, env

    for target in ("base", "bn"):
        run = tmp_path / "results" / "runs" / target / "kaiming_normal" / "seed0"
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        for f in ("metrics.csv", "summary.json"):
            (run / f).touch()
        for kind in ("weights", "features", "gradients"):
            (run / f"{kind}.zarr").mkdir(exist_ok=True)
    (tmp_path / "results" / "data" / "dataset.zarr").mkdir(parents=True, exist_ok=True)
    targets = [
        str(tmp_path / "results" / "runs" / v / "kaiming_normal" / "seed0" / f"{k}.zarr")
        for v in ("base", "bn")
        for k in ("weights", "features", "gradients")
    ]
    subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            *targets,
            "--touch",
            "--cores",
            "1",
            "--configfile",
            str(tmp_path / "a.yaml"),
        ],
        env=env(),
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    plan = snakemake(
        tmp_path,
        *[t.replace("/base/", "/leaky/").replace("/bn/", "/bn-leaky/") for t in targets],
        "-n",
        "--configfile",
        str(tmp_path / "b.yaml"),
    ).stdout
    assert "runs/leaky/kaiming_normal/seed0" in plan and "runs/bn-leaky/kaiming_normal/seed0" in plan
    assert (
        "runs/base/kaiming_normal" not in plan and "runs/bn/kaiming_normal" not in plan and "rule dataset" not in plan
    )


def test_gain_convention_is_an_experiment_factor():
    cfg = dcfg.validate({**base_config(), "grid": {"init.gain": ["torch", "relu"]}})
    assert sorted(cfg["variants"]) == ["base", "gain_relu"]
    gains = {r.variant: dcfg.run_settings(cfg, r)["init"]["gain"] for r in dcfg.runs(cfg)}
    assert gains == {"base": "torch", "gain_relu": "relu"}


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "presets").glob("*.yaml")))
def test_every_preset_is_a_valid_overlay(preset):
    """Each preset over config.yaml (the way --configfile applies it) passes validation."""
    cfg = dcfg.deep_merge(base_config(), yaml.safe_load((REPO / "presets" / preset).read_text()))
    dcfg.validate(cfg, check_paths=False)


def test_resnet_full_preset_is_the_documented_recipe():
    """The GPU recipe's numbers: >= 10,000 inputs for emission/absorption and the statistics,
    checkpoints 0 and the last, several seeds, the recipe's training options."""
    cfg = dcfg.validate(
        dcfg.deep_merge(base_config(), yaml.safe_load((REPO / "presets" / "resnet-cifar-full.yaml").read_text())),
        check_paths=False,
    )
    tr, ex = cfg["train"], cfg["extract"]
    assert cfg["model"]["name"] == "resnet18_cifar" and cfg["data"]["valid_split"] == "test"
    assert (tr["optimizer"], tr["nesterov"], tr["schedule"], tr["augment"]) == ("sgd", True, "onecycle", "flip_crop")
    assert tr["label_smoothing"] > 0 and tr["weight_decay"] == 5e-4 and tr["batch_size"] == 512
    assert {0, tr["epochs"]} <= set(dcfg.checkpoint_epochs(tr)) and len(cfg["seeds"]) >= 3
    assert ex["gradient_batches"] * ex["gradient_batch_size"] >= 10_000 and ex["gradient_split"] == "train"
    assert ex["max_inputs"] >= 10_000 and cfg["data"]["random_size"] >= 10_000
    for name in ("ablations-full", "depth-full"):
        full = dcfg.validate(
            dcfg.deep_merge(base_config(), yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())),
            check_paths=False,
        )
        assert len(full["seeds"]) >= 5 and full["train"]["epochs"] >= 20 and full["data"]["valid_split"] == "test"


def test_results_and_resources_have_one_spelling(tmp_path):
    """A trailing slash or a detour through '..' names the same folder: the validated config
    spells it one way, so Snakemake's outputs (and their rerun checks) are the same."""
    for spelling in ("res/demo/", "res/x/../demo", "res//demo/."):
        cfg = dcfg.validate(
            {**tiny_config(tmp_path / "r"), "results": spelling, "resources": spelling}, check_paths=False
        )
        assert cfg["results"] == cfg["resources"] == "res/demo", spelling


def test_the_paper_presets_pick_the_best_epoch_on_held_out_training_images():
    """The best-validation stage selects on images held out of the training set; the test set is
    only reported (issue 2/7: with valid_split test the selection looked at the test set)."""
    for name in ("paper-full", "paper-reduced"):
        cfg = dcfg.validate(
            dcfg.deep_merge(base_config(), yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())),
            check_paths=False,
        )
        assert cfg["data"]["valid_split"] == "train" and cfg["data"]["valid_size"] >= 1000, name
        assert "best" in cfg["stats"]["claims_at"] and "best" in cfg["train"]["checkpoints"], name


def test_an_exponent_without_a_dot_is_the_number_it_spells(tmp_path):
    """YAML 1.1 (PyYAML, Snakemake) reads `lr: 1e-3` as the string '1e-3'; where the schema wants a
    number the config takes the number (in overrides too); an integer key, a word, and a grid level
    (whose spelling names a variant) are still refused, the grid's with the spelling to use."""
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3, weight_decay: 5E-4}\noverrides: {ones: {train: {lr: 2e-5}}}\n")
    layer = dcfg.read_config_file(path)
    assert layer["train"]["lr"] == "1e-3"  # what YAML 1.1 gives
    cfg = dcfg.validate(layer, check_paths=False)
    assert (cfg["train"]["lr"], cfg["train"]["weight_decay"]) == (1e-3, 5e-4)
    assert cfg["overrides"]["ones"]["train"]["lr"] == 2e-5
    for bad, message in [
        ({"train": {"lr": "fast"}}, "'train.lr': 'fast' is not of type 'number'"),
        ({"train": {"epochs": "1e2"}}, "'train.epochs': '1e2' is not of type 'integer'"),
        ({"grid": {"train.lr": ["1e-3", 1.0e-4]}}, "write 0.001, with a dot"),
    ]:
        with pytest.raises(dcfg.ConfigError, match=message):
            dcfg.validate(bad, check_paths=False)


def test_the_compared_settings_line_names_what_differs_from_the_defaults(tmp_path):
    """What the rules give Snakemake to compare (settings_line): the settings' digest, the run's
    keys and the settings that differ from the schema's defaults, so a rerun's reason is short."""
    defaults = dcfg.default_settings()
    over = {"inits": ["kaiming_normal", "ones"], "overrides": {"ones": {"train": {"lr": 5.0e-4}}}}
    cfg = dcfg.validate(tiny_config(tmp_path / "r", **over), check_paths=False)
    ones, kaiming = (dcfg.extract_settings(cfg, dcfg.Run("base", i, 0)) for i in ("ones", "kaiming_normal"))
    line = dcfg.settings_line(ones, defaults)
    assert "train.lr=0.0005" in line and 'run.init_name="ones"' in line and "train.epochs=1" in line
    assert "train.optimizer" not in line and "model.name" not in line  # defaults left out
    assert "train.lr=0.001" in dcfg.settings_line(kaiming, defaults)
    assert line.split()[0] == dcfg.config_hash(ones) and len(line) < 1000


def test_a_checkpoint_after_the_last_epoch_is_named_where_it_matters():
    """`train.checkpoints: [0, 5]` with 2 epochs keeps 0 and 2: where stats.claims_at then asks for
    an epoch that is not kept, the error says which checkpoints were dropped, and names
    train.checkpoints where claims_at asks for the dropped one itself."""
    with pytest.raises(
        dcfg.ConfigError, match=r"'train.checkpoints': epoch 5 is after the last epoch \(train.epochs is 2\)"
    ):
        dcfg.validate({"train": {"epochs": 2, "checkpoints": [0, 5]}, "stats": {"claims_at": [5]}}, check_paths=False)
    with pytest.raises(dcfg.ConfigError, match=r"'stats.claims_at': epoch 1 .* keeps \[0, 2\]; \[5\] after the last"):
        dcfg.validate({"train": {"epochs": 2, "checkpoints": [0, 5]}, "stats": {"claims_at": [1]}}, check_paths=False)


def test_digits_where_a_number_is_wanted_are_that_number(tmp_path):
    """Snakemake's `--config seeds=[0,1,2]` gives a list of strings; they are read as the integers
    they spell, where the schema wants an integer or a number; other strings are refused."""
    cfg = dcfg.validate({"seeds": ["0", "1", " 2"], "train": {"epochs": "3", "lr": "1"}}, check_paths=False)
    assert (cfg["seeds"], cfg["train"]["epochs"], cfg["train"]["lr"]) == ([0, 1, 2], 3, 1)
    with pytest.raises(dcfg.ConfigError, match="'seeds.*'one' is not of type 'integer'"):
        dcfg.validate({"seeds": ["one"]}, check_paths=False)
    (tmp_path / "demo.yaml").write_text((REPO / "presets" / "demo.yaml").read_text())
    proc = snakemake(tmp_path, "-n", "--configfile", "demo.yaml", "--config", "seeds=[0,1]", check=False)
    assert proc.returncode == 0 and "train_stacked" in proc.stdout, proc.stderr[-2000:]


def test_a_setting_that_is_set_but_idle_is_named():
    """valid_size with the test set as the valid split, another source's settings, sgd's momentum
    with adam: set to a non-default value, each is named with why it does nothing; defaults are not."""
    assert preflight.unused_settings(dcfg.validate({}, check_paths=False)) == []
    cfg = dcfg.validate(
        {"data": {"valid_split": "test", "valid_size": 500, "imagefolder": {"path": "x"}}, "train": {"momentum": 0.5}},
        check_paths=False,
    )
    assert preflight.unused_settings(cfg) == [
        "config key 'data.valid_size' (500) is not used: data.valid_split is test: the test set is the valid split",
        "config key 'data.imagefolder.path' ('x') is not used: data.source is cifar10",
        "config key 'train.momentum' (0.5) is not used: train.optimizer is adam (sgd only)",
    ]


def test_a_report_without_results_names_the_configfile_to_give(tmp_path):
    """`snakemake --report` with config.yaml's results/paper not there says what to do in one line
    (Snakemake's own error named one missing figure)."""
    assert preflight.report_without_results(["snakemake", "-n"], tmp_path) is None
    assert preflight.report_without_results(["snakemake", "--report", "r.html"], tmp_path) is not None
    (tmp_path / "figures").mkdir()
    assert preflight.report_without_results(["snakemake", "--report=r.html"], tmp_path) is None
    proc = snakemake(tmp_path, "--report", str(tmp_path / "r.html"), check=False)
    assert proc.returncode != 0 and "--report: no results in results/paper" in proc.stderr, proc.stderr[-2000:]
    assert "--configfile presets/demo.yaml" in proc.stderr and not (tmp_path / "r.html").exists()

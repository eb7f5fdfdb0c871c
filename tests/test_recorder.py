"""Recording any training loop (dnndist.Recorder, the Lightning callback) and reporting on it
(dnndist report): the workflow's stores, statistics, figures, tables and a comparison of groups."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn

import dnndist
from dnndist import DnndistError, integrity, recorder
from dnndist.tables import group_effects

from .conftest import cli_run

GROUPS = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05), "adam": lambda p: torch.optim.Adam(p, lr=1e-3)}
SEEDS = (0, 1, 2)


def small_model() -> nn.Module:
    """A small model of torchvision's blocks: two conv + batch norm + ReLU blocks and a linear head."""
    from torchvision.ops import Conv2dNormActivation

    return nn.Sequential(
        Conv2dNormActivation(3, 8),
        Conv2dNormActivation(8, 16, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def data(seed: int = 0, n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_recorded(out, group: str, seed: int, epochs: int = 2, **options) -> tuple[nn.Module, recorder.Recorder]:
    """A plain training loop with a recorder: ``epochs`` epochs of 3 steps, the test accuracy per epoch."""
    torch.manual_seed(seed)
    model = small_model()
    opt = GROUPS[group](model.parameters())
    x, y = data()
    probe = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:48], y[:48]), batch_size=16)
    with dnndist.Recorder(model, out, group=group, seed=seed, inputs=probe, optimizer=opt, **options) as rec:
        for _ in range(epochs):
            model.train()
            for xb, yb in zip(x.split(32), y.split(32), strict=True):
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.step(loss=loss)
            model.eval()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean()
            rec.epoch(test_accuracy=acc)
    return model, rec


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """2 groups x 3 seeds recorded (2 epochs each), then `dnndist report` over them."""
    root = tmp_path_factory.mktemp("recorded")
    models = {}
    for group in GROUPS:
        for seed in SEEDS:
            models[(group, seed)] = train_recorded(root / "runs" / f"{group}-seed{seed}", group, seed)[0]
    code, out = cli_run("report", root / "runs", "--out", root / "report")
    assert code == 0, out
    return root, models


@pytest.mark.slow
def test_two_groups_of_three_seeds_recorded_then_reported(recorded):
    root, _ = recorded
    report = root / "report"
    for group in GROUPS:
        for seed in SEEDS:
            run = root / "runs" / f"{group}-seed{seed}"
            info = json.loads((run / recorder.RECORD_FILE).read_text())
            assert info["status"] == "closed" and [r["epoch"] for r in info["records"]] == [0, 1, 2]
            assert info["optimizer"]["class"] == type(GROUPS[group]([nn.Parameter(torch.ones(1))])).__name__
            assert not (run / recorder.RECORDS).exists()  # the record points are combined into the stores
            for kind in ("weights", "features", "gradients"):
                integrity.verify_store(run / f"{kind}.zarr")
                ds = xr.open_zarr(run / f"{kind}.zarr")
                assert ds["init"].values.tolist() == [group] and ds["seed"].values.tolist() == [seed]
                assert ds["epoch"].values.tolist() == [0, 1, 2]
    weights = dnndist.open_results(report, "weights")  # the report folder is a results folder
    assert sorted(weights["init"].values) == ["adam", "sgd"] and weights["seed"].values.tolist() == list(SEEDS)
    for name in ("fig0_glance", "fig1_training", "fig2_weights", "fig3_features", "fig4_emission", "fig8_esd"):
        assert (report / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (report / "figures" / f"{name}.pdf").is_file()
    for name in ("glance", "groups", "range", "depth_trend", "emission"):
        assert (report / "tables" / f"{name}.csv").is_file()
    groups = pd.read_csv(report / "tables" / "groups.csv")
    assert set(groups["group"]) == {"sgd"} and set(groups["base_group"]) == {"adam"}
    assert {"accuracy", "std", "kurtosis"} <= set(groups["statistic"])
    assert (groups["n_seeds"] == 3).all() and (groups["verdict"] == "descriptive only").all()  # 3 seeds < 5
    page = (report / "report.html").read_text()
    assert "6 recorded runs, 2 groups" in page and "sgd" in page and "adam" in page
    assert page.count("data:image/png;base64,") >= 6
    training = pd.read_csv(report / "stats" / "training.csv")
    assert set(training["split"]) == {"train", "test"} and set(training["epoch"]) == {1, 2}


@pytest.mark.slow
def test_the_stores_hold_the_model_at_each_record_point(recorded):
    """The last record point is the trained model, exactly; the features are what analyze gives."""
    root, models = recorded
    model = models[("adam", 1)]
    run = root / "runs" / "adam-seed1"
    w = xr.open_zarr(run / "weights.zarr", group="4")  # the linear head
    np.testing.assert_array_equal(w["weight"].sel(epoch=2).values.squeeze(), model[4].weight.detach().numpy())
    x, y = data()
    direct = dnndist.analyze(model, [(x[:48], y[:48])], gradient_inputs=48)
    f = xr.open_zarr(run / "features.zarr").sel(epoch=2).squeeze()
    np.testing.assert_allclose(
        f["variance"].values, direct.features["variance"].squeeze().values, rtol=1e-6, equal_nan=True
    )
    em = xr.open_zarr(run / "gradients.zarr", group="0.0")["em"].sel(epoch=2).squeeze().values
    np.testing.assert_allclose(em, direct.gradient_groups["0.0"]["em"].squeeze().values, rtol=1e-5)


def test_a_loop_that_fails_keeps_what_was_recorded(tmp_path):
    out = tmp_path / "run"
    model = small_model()
    with pytest.raises(RuntimeError, match="boom"):
        with dnndist.Recorder(model, out, group="g", inputs=data()[0][:16], every=2) as rec:
            for _ in range(5):
                rec.step(loss=1.0)
            raise RuntimeError("boom")
    info = recorder.read_info(out)
    assert info["status"] == "failed: RuntimeError"
    assert xr.open_zarr(out / "weights.zarr")["epoch"].values.tolist() == [0, 2, 4]  # steps 0, 2, 4


@pytest.mark.slow
def test_a_run_never_closed_is_finished_by_the_report_and_a_damaged_record_is_refused(tmp_path):
    out = tmp_path / "runs" / "a"
    rec = dnndist.Recorder(small_model(), out, group="a", seed=3)  # weights only
    rec.epoch()
    assert sorted(p.name for p in (out / recorder.RECORDS).iterdir()) == [
        "00000000.safetensors",
        "00000001.safetensors",
    ]
    code, msg = cli_run("report", tmp_path / "runs", "--out", tmp_path / "report")  # the process "died" unclosed
    assert code == 0, msg
    assert xr.open_zarr(out / "weights.zarr")["epoch"].values.tolist() == [0, 1]
    assert (tmp_path / "report" / "figures" / "fig2_weights.png").is_file()
    assert "fig3_features" in (tmp_path / "report" / "report.html").read_text()  # named as not drawn, and why
    # a second report into the same folder holds only its own runs; a folder of something else is refused
    dnndist.Recorder(small_model(), tmp_path / "runs" / "b", group="b").close()
    assert cli_run("report", tmp_path / "runs", "--out", tmp_path / "report")[0] == 0
    assert sorted(p.name for p in (tmp_path / "report" / "runs" / "recorded").iterdir()) == ["a", "b"]
    assert cli_run("report", out, "--out", tmp_path / "report")[0] == 0
    assert sorted(p.name for p in (tmp_path / "report" / "runs" / "recorded").iterdir()) == ["a"]
    code, msg = cli_run("report", out, "--out", tmp_path / "runs")
    assert code == 2 and "holds no dnndist report" in msg

    out2 = tmp_path / "damaged"
    rec = dnndist.Recorder(small_model(), out2, group="b")
    f = out2 / recorder.RECORDS / "00000000.safetensors"
    data_ = bytearray(f.read_bytes())
    data_[-5] ^= 0xFF
    f.write_bytes(bytes(data_))
    with pytest.raises(integrity.IntegrityError, match="damaged"):
        rec.close()


def test_bad_recorder_input_is_a_clear_error(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    cases = [
        (lambda: dnndist.Recorder("not a model", tmp_path / "a"), "nn.Module"),
        (lambda: dnndist.Recorder(small_model(), tmp_path / "b", group="a/b"), "group must be"),
        (lambda: dnndist.Recorder(small_model(), tmp_path / "c", every=0), "every must be"),
        (lambda: dnndist.Recorder(small_model(), tmp_path / "d", seed=-1), "seed must be"),
        (lambda: dnndist.Recorder(small_model(), tmp_path / "full"), "not empty"),
        (lambda: dnndist.Recorder(small_model(), tmp_path / "e", inputs=torch.empty(0, 3, 8, 8)), "inputs"),
    ]
    for make, message in cases:
        with pytest.raises(DnndistError, match=message):
            make()
    rec = dnndist.Recorder(small_model(), tmp_path / "f")
    rec.close()
    with pytest.raises(DnndistError, match="closed"):
        rec.step()
    code, msg = cli_run("report", tmp_path / "nothing-here", "--out", tmp_path / "r")
    assert code == 2 and "no such folder" in msg and "Traceback" not in msg


def test_group_effects_pair_by_seed():
    """A planted +0.01 std in group b over 6 seeds whose own spread is 10x larger: paired by seed it
    is found ("increases"), the other statistics are not; a seed only one group has is not used."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(7):
        offset = rng.normal(0, 0.1)  # the seed's own level, shared by both groups
        for group, shift in (("a", 0.0), ("b", 0.01)):
            if group == "b" and seed == 6:
                continue
            for layer in ("l1", "l2"):
                for stat, base in (("std", 0.5), ("kurtosis", 0.0)):
                    value = base + offset + (shift if stat == "std" else 0) + rng.normal(0, 1e-4)
                    rows.append(("recorded", group, seed, 2, layer, "weight", stat, value))
    weights = pd.DataFrame(rows, columns=["variant", "init", "seed", "epoch", "layer", "param", "statistic", "value"])
    out = group_effects(None, weights).set_index("statistic")
    assert out.loc["std", "verdict"] == "increases" and out.loc["std", "n_seeds"] == 6
    assert out.loc["std", "ci_low"] < 0.01 < out.loc["std", "ci_high"]
    assert out.loc["kurtosis", "verdict"] == "inconclusive"
    assert (out["unpaired_seeds"] == 1).all() and set(out["base_group"]) == {"a"}
    with pytest.raises(ValueError, match="base group"):
        group_effects(None, weights, base="c")


@pytest.mark.slow
def test_lightning_callback_records_through_trainer_fit(tmp_path):
    lightning = pytest.importorskip("lightning")  # the dev environment has it (pyproject [dev])
    from dnndist.callbacks import RecorderCallback

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = small_model()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_accuracy", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    for group in ("a", "b"):
        for seed in SEEDS:
            torch.manual_seed(seed)
            trainer = lightning.Trainer(
                max_epochs=2,
                callbacks=[
                    RecorderCallback(
                        tmp_path / "runs" / f"{group}{seed}", group=group, seed=seed, inputs=(x[:32], y[:32])
                    )
                ],
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                accelerator="cpu",
                devices=1,
            )
            trainer.fit(Module(), loader, loader)
    info = recorder.read_info(tmp_path / "runs" / "a0")
    assert info["status"] == "closed" and info["optimizer"]["class"] == "Adam"
    assert [r["epoch"] for r in info["records"]] == [0, 1, 2]
    metrics = pd.read_csv(tmp_path / "runs" / "a0" / "metrics.csv")
    assert {("valid", "accuracy"), ("train", "loss")} <= set(zip(metrics["split"], metrics["metric"], strict=True))
    code, msg = cli_run("report", tmp_path / "runs", "--out", tmp_path / "report")
    assert code == 0, msg
    groups = pd.read_csv(tmp_path / "report" / "tables" / "groups.csv")
    assert set(groups["group"]) == {"b"} and set(groups["base_group"]) == {"a"} and (groups["n_seeds"] == 3).all()
    assert (tmp_path / "report" / "figures" / "fig3_features.png").is_file()


def test_the_docs_examples_call_the_recorder_with_its_own_arguments():
    """docs/recording.md's examples parse, and every Recorder / RecorderCallback call in them binds to
    the signature (a renamed or removed argument fails here, not in a reader's notebook)."""
    import ast
    import inspect
    import re
    from pathlib import Path

    from dnndist.callbacks import RecorderCallback

    doc = (Path(__file__).resolve().parents[1] / "docs" / "recording.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    calls = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "Recorder",
                "RecorderCallback",
            ):
                calls.append(node)
    assert len(calls) == 2
    recorder = inspect.signature(dnndist.Recorder.__init__)
    # the recorder's own keywords, and analyze's options it passes on (**options)
    known = (set(recorder.parameters) | set(inspect.signature(dnndist.analyze).parameters)) - {"self", "options"}
    for node in calls:
        names = [k.arg for k in node.keywords]
        if getattr(node.func, "attr", "") == "Recorder":
            recorder.bind(None, *[None] * len(node.args))
            assert set(names) <= known, names
        else:  # the callback's keywords are the recorder's (the trainer gives the model and the optimiser)
            inspect.signature(RecorderCallback.__init__).bind(None, *[None] * len(node.args))
            assert set(names) <= known - {"model", "optimizer"}, names


def test_the_epochs_train_loss_is_the_mean_of_its_steps_and_metrics_are_split_by_name(tmp_path):
    with dnndist.Recorder(small_model(), tmp_path / "r", group="g", start=False) as rec:
        rec.step(loss=torch.tensor(1.0))
        rec.step(loss=torch.tensor([2.0, 4.0]))  # a per-sample loss: its mean
        rec.step(loss=5.0)
        rec.epoch(test_accuracy=torch.tensor(0.5), val_loss=0.25, lr=0.1)
    m = pd.read_csv(tmp_path / "r" / "metrics.csv").set_index(["split", "metric"])["value"]
    assert m[("train", "loss")] == pytest.approx(3.0) and m[("test", "accuracy")] == 0.5
    assert m[("valid", "loss")] == 0.25 and m[("train", "lr")] == 0.1
    assert xr.open_zarr(tmp_path / "r" / "weights.zarr")["epoch"].values.tolist() == [1]  # start=False: no epoch 0

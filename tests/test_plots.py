"""Figures: drawn from tiny synthetic tidy tables and inspected as matplotlib objects (labels,
legends, scales, ranges), not just written."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from dnndist import cli, plots, stats  # noqa: E402

from .conftest import REPO  # noqa: E402

STYLE = REPO / "workflow" / "style" / "dnndist.mplstyle"
INITS = ["kaiming_normal", "xavier_uniform", "ones"]


@pytest.fixture(autouse=True)
def _style():
    plots.use_style(STYLE)
    yield
    plt.close("all")


def data_axes(fig: plt.Figure) -> list[plt.Axes]:
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def assert_no_empty_panels(fig: plt.Figure) -> None:
    for ax in data_axes(fig):
        assert ax.has_data(), f"empty panel {ax.get_title()!r}"


def legend_texts(fig: plt.Figure) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


# --------------------------------------------------------------------------- tables
def training_summary(n_seeds: int = 3, variants: tuple[str, ...] = ("base",)) -> pd.DataFrame:
    rows = []
    for variant, (k, init) in itertools.product(variants, enumerate(INITS)):
        for epoch in range(4):
            for split in ("train", "valid", "test"):
                if split == "train" and epoch == 0:
                    continue
                loss = 2.3 if init == "ones" else 1.0 + 0.5 / (epoch + 1) + 0.03 * k + (0.1 if split == "test" else 0.0)
                for stat, mean in (("loss", loss), ("accuracy", 1 / loss)):
                    half = 0.01 if n_seeds > 1 else np.nan
                    rows.append(
                        dict(
                            variant=variant,
                            init=init,
                            epoch=epoch,
                            split=split,
                            statistic=stat,
                            mean=mean,
                            ci_low=mean - half,
                            ci_high=mean + half,
                            n_seeds=n_seeds,
                        )
                    )
    return pd.DataFrame(rows)


def weight_stores(rng: np.random.Generator) -> dict[str, dict[str, xr.Dataset]]:
    """Per init, the layer groups of a weights store: weights/biases at epochs 0 and 2; one
    large weight (a tail) after training; ones is constant before training."""
    stores = {}
    for init in INITS:
        groups = {}
        for layer, (o, i) in (("conv1", (8, 27)), ("fc1", (16, 64))):
            w = np.stack(
                [np.ones((o, i)) if init == "ones" else rng.normal(0, 0.1, (o, i)), rng.normal(0, 0.12, (o, i))]
            )
            w[1, 0, 0] = 3.0  # one large weight after training: the tail the figure must show
            b = np.stack([np.ones(o) if init == "ones" else rng.uniform(-0.2, 0.2, o), rng.normal(0, 0.3, o)])
            groups[layer] = xr.Dataset(
                {
                    "weight": (("variant", "init", "seed", "epoch", "o", "i"), w[None, None, None]),
                    "bias": (("variant", "init", "seed", "epoch", "o"), b[None, None, None]),
                },
                coords={"variant": ["base"], "init": [init], "seed": [0], "epoch": [0, 2]},
            )
        stores[init] = groups
    return stores


def weight_hist(rng: np.random.Generator) -> pd.DataFrame:
    return pd.concat(
        [stats.weight_histograms(groups, [0, 2]) for groups in weight_stores(rng).values()], ignore_index=True
    )


def feature_hist(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for (k, init), epoch, layer, split in itertools.product(
        enumerate(INITS), (0, 2), ("conv1", "conv2"), ("train", "random")
    ):
        scale = 1000.0 if init == "ones" else 0.5 + 0.1 * k + 0.2 * epoch
        x = np.linspace(-4 * scale, 4 * scale, 40)
        dens = np.exp(-0.5 * (x / scale) ** 2) / (scale * np.sqrt(2 * np.pi))
        rows += [
            dict(
                variant="base",
                init=init,
                seed=0,
                epoch=epoch,
                layer=layer,
                kind="pre",
                split=split,
                x=xi,
                density=di,
                mean=0.0,
                std=scale,
                min=-4 * scale,
                max=4 * scale,
                outside=0.0,
            )
            for xi, di in zip(x, dens)
        ]
    return pd.DataFrame(rows)


def em_ab(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for layer, scale in (("conv1", 1.0), ("conv2", 500.0)):
        for measure, channel, sample in itertools.product(("emission", "absorption"), range(4), range(20)):
            rows.append(
                dict(
                    variant="base",
                    init="kaiming_normal",
                    seed=0,
                    epoch=2,
                    layer=layer,
                    measure=measure,
                    channel=channel,
                    sample=sample,
                    value=scale * rng.gamma(2.0) * (3 if measure == "absorption" else 1),
                )
            )
    return pd.DataFrame(rows)


def ablation_variants() -> list[str]:
    names = [
        "-".join(t for t in combo if t) or "base"
        for combo in itertools.product(("", "bn"), ("", "leaky"), ("", "l2_0.0001"), ("", "l1_1e-05"))
    ]
    return [*names, "binary"]


def weights_summary(variants: list[str], n_seeds: int = 2) -> pd.DataFrame:
    rows = []
    for (v_i, variant), init, epoch, depth in itertools.product(
        enumerate(variants), ("kaiming_normal", "ones"), (0, 5), (1, 2, 3)
    ):
        for stat in ("std", "kurtosis", "near_zero_rel_0.1", "tail_index", "max"):
            mean = 0.1 * depth + 0.01 * v_i + (0.05 * epoch if stat != "std" else 0.0)
            half = 0.02 if n_seeds > 1 else np.nan
            rows.append(
                dict(
                    variant=variant,
                    init=init,
                    epoch=epoch,
                    layer=f"conv{depth}",
                    depth=depth,
                    param="weight",
                    statistic=stat,
                    mean=mean,
                    ci_low=mean - half,
                    ci_high=mean + half,
                    n_seeds=n_seeds,
                )
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Fig 1
def test_training_has_test_loss_log_panel_and_true_interval_label():
    fig = plots.draw_training(training_summary(n_seeds=3))
    axes = data_axes(fig)
    assert_no_empty_panels(fig)
    assert all(ax.get_ylabel() for ax in axes) and axes[-1].get_xlabel() == "epoch"
    assert [ax.get_yscale() for ax in axes].count("log") == 1
    loss_axes = [ax for ax in axes if "loss" in ax.get_ylabel()]
    assert len(loss_axes) == 2
    for ax in loss_axes:
        gids = {line.get_gid() for line in ax.get_lines()}
        assert {f"{i}|test|loss" for i in INITS} <= gids and {f"{i}|train|loss" for i in INITS} <= gids
    assert legend_texts(fig) == [plots.INIT_LABELS[i] for i in INITS]  # one entry per init
    assert fig.legends[0].get_title().get_text() == "mean and 95 % t-interval over 3 seeds"
    assert any(ax.collections for ax in axes)  # bands


def test_training_one_seed_draws_no_band():
    fig = plots.draw_training(training_summary(n_seeds=1))
    assert fig.legends[0].get_title().get_text() == "one seed: no interval"
    assert not any(ax.collections for ax in fig.axes)
    assert "95" not in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_training_draws_valid_once_when_it_is_the_test_split():
    df = training_summary()
    valid = df[df["split"] == "test"].assign(split="valid")
    fig = plots.draw_training(pd.concat([df[df["split"] != "valid"], valid], ignore_index=True))
    acc = data_axes(fig)[-1]
    assert {line.get_gid().split("|")[1] for line in acc.get_lines()} == {"test"}
    assert "valid = test" in acc.get_title()


def test_training_log_panel_resolves_runs_beside_an_off_scale_one():
    df = training_summary()
    df.loc[df["init"] == "ones", ["mean", "ci_low", "ci_high"]] = 5e7
    fig = plots.draw_training(df)
    for ax in data_axes(fig)[:2]:
        assert ax.get_ylim()[1] < 10  # the ones run is named, not drawn to scale
        assert any("ones: 5e+07 (off scale)" in t.get_text() for t in ax.texts)


def test_training_with_variants_shows_one_and_names_it():
    fig = plots.draw_training(training_summary(variants=("bn", "base", "leaky")))
    assert fig._suptitle is not None and "base" in fig._suptitle.get_text()
    assert len(legend_texts(fig)) == len(INITS)


# --------------------------------------------------------------------------- Fig 2
def test_weight_histograms_cover_full_range():
    df = weight_hist(np.random.default_rng(0))
    after = df[
        (df["epoch"] == 2) & (df["param"] == "weight") & (df["init"] == "kaiming_normal") & (df["layer"] == "conv1")
    ]
    assert after["max"].iloc[0] == 3.0 and after["x"].max() < 3.0 < after["x"].max() + 2 * np.diff(after["x"]).max()
    assert after.sort_values("x")["density"].iloc[-1] > 0  # the one large weight is in the last bin
    ones = df[(df["epoch"] == 0) & (df["init"] == "ones")]
    assert ones["density"].isna().all() and (ones["min"] == 1).all() and len(ones) == 4  # one row per tensor


def test_weight_figure_shows_biases_tails_and_constant_inits():
    df = weight_hist(np.random.default_rng(0))
    fig = plots.draw_weight_distributions(df)
    axes = data_axes(fig)
    assert_no_empty_panels(fig)
    assert len(axes) == 2 * 4
    titles = [ax.get_title() for ax in axes]
    assert sum("bias" in t for t in titles) == 4 and sum("weight" in t for t in titles) == 4
    for ax in axes:
        assert ax.get_yscale() == "log"
        layer, param, epoch = (
            ax.get_title().split()[0],
            ax.get_title().split()[1].rstrip(","),
            int(ax.get_title().split()[3]),
        )
        sub = df[(df["layer"] == layer) & (df["param"] == param) & (df["epoch"] == epoch)]
        lo, hi = ax.get_xlim()
        random = sub[~sub["init"].isin(plots.CONSTANT_INITS)]  # they set the axes: every value on it
        assert lo <= random["min"].min() and hi >= random["max"].max(), ax.get_title()
        gids = {line.get_gid() for line in ax.get_lines()}
        for init, d in sub[sub["init"].isin(plots.CONSTANT_INITS)].groupby("init"):
            inside = lo <= d["min"].iloc[0] and d["max"].iloc[0] <= hi
            assert inside or f"{init}|off" in gids, ax.get_title()  # outside: an arrow at the edge
    conv1_w0 = next(ax for ax in axes if ax.get_title().startswith("conv1 weight, epoch 0"))
    assert "ones|off" in {line.get_gid() for line in conv1_w0.get_lines()}
    assert conv1_w0.get_xlim()[1] < 1.0  # the ones' point mass at 1 does not stretch the axis
    assert conv1_w0.get_title().splitlines()[1] == "ones at 1 →"  # it is named, with its value
    conv1_w2 = next(ax for ax in axes if ax.get_title().startswith("conv1 weight, epoch 2"))
    assert conv1_w2.get_xlim()[1] >= 3.0  # the large weight is on the axis
    assert legend_texts(fig) == [plots.INIT_LABELS[i] for i in INITS]


def test_weight_figure_draws_identical_tensors_once_and_a_point_mass_inside_the_axis():
    """Inits whose biases are the same draw (PyTorch's default bias, same seed) are one grey line,
    named; a constant tensor inside the others' range (zeros) is a vertical line."""
    df = weight_hist(np.random.default_rng(0))
    twin = df[df["init"] == "kaiming_normal"].assign(init="xavier_normal")
    bias = (df["param"] == "bias") & (df["init"] == "xavier_uniform")
    df = pd.concat([df[~bias], twin, twin[twin["param"] == "bias"].assign(init="xavier_uniform")], ignore_index=True)
    zeros = df[(df["init"] == "ones")].assign(init="zeros", min=0.0, max=0.0, mean=0.0)
    fig = plots.draw_weight_distributions(pd.concat([df, zeros], ignore_index=True))
    panel = next(ax for ax in data_axes(fig) if ax.get_title().startswith("conv1 bias, epoch 0"))
    gids = [line.get_gid() for line in panel.get_lines()]
    stairs = [p.get_gid() for p in panel.patches]
    assert stairs.count("same|hist") == 1 and not any(g.startswith("xavier") for g in stairs if g)
    assert "grey: 3 inits, identical values" in panel.get_title()
    assert "zeros|point" in gids and "all = 0: zeros" in panel.get_title()


# --------------------------------------------------------------------------- Fig 3
def test_feature_panels_carry_std():
    df = feature_hist(np.random.default_rng(0))
    fig = plots.draw_features(df)
    axes = data_axes(fig)
    assert_no_empty_panels(fig)
    assert len(axes) == 4
    for ax in axes:
        texts = [t.get_text() for t in ax.texts if t.get_gid() == "std"]
        assert len(texts) == len(INITS)
        assert "0.5 \u2192 0.9" in texts[0]  # kaiming normal: std 0.5 before, 0.9 after
        assert "ones: 1e+03 \u2192 1e+03" in texts  # constant init: not drawn, std listed
        assert {line.get_gid() for line in ax.get_lines()} == {f"{i}|{e}" for i in INITS[:2] for e in (0, 2)}
    assert len([t for t in legend_texts(fig) if not t.startswith("epoch")]) == 2


def test_feature_histograms_carry_std_range_and_off_range_share():
    shape = (1, 1, 1, 1, 1, 1, 1)  # variant, init, seed, epoch, layer, kind, split
    counts = np.array([10.0, 30.0, 40.0, 18.0])  # 98 of 100 values in the bins, 2 beyond
    dims_ = ("variant", "init", "seed", "epoch", "layer", "kind", "split")
    var = {
        k: (dims_, np.full(shape, v))
        for k, v in dict(
            n=100.0,
            mu=0.1,
            m2=100 * 0.25,
            vmin=-3.0,
            vmax=5.0,
            hist_lo=-2.0,
            hist_hi=2.0,
            underflow=0.0,
            overflow=2.0,
        ).items()
    }
    var["hist"] = ((*dims_, "bin"), counts.reshape(*shape, 4))
    ds = xr.Dataset(
        var,
        coords={
            "variant": ["base"],
            "init": ["kaiming_normal"],
            "seed": [0],
            "epoch": [0],
            "layer": ["conv1"],
            "kind": ["pre"],
            "split": ["train"],
        },
    )
    df = stats.feature_histograms(ds, [0])
    assert len(df) == 4 and np.isclose((df["density"] * 1.0).sum(), 0.98)  # bin width 1
    row = df.iloc[0]
    assert (row["std"], row["min"], row["max"], row["outside"]) == (0.5, -3.0, 5.0, 0.02)


# --------------------------------------------------------------------------- Fig 4
def test_emission_axes_have_own_y_and_say_what_whiskers_are():
    fig = plots.draw_emission(em_ab(np.random.default_rng(0)), init="kaiming_normal")
    axes = data_axes(fig)
    assert_no_empty_panels(fig)
    assert len(axes) == 4
    for ax in axes:
        assert ax.get_shared_y_axes().get_siblings(ax) == [ax]
    assert axes[2].get_ylim()[1] > 50 * axes[0].get_ylim()[1]  # conv2 is on its own scale
    text = fig._suptitle.get_text()
    assert "whiskers = 5th-95th percentile" in text and "20 inputs" in text


def test_emission_rejects_unknown_layer():
    with pytest.raises(Exception, match="emission_layers"):
        plots.draw_emission(em_ab(np.random.default_rng(0)), layers=["conv9"])


# --------------------------------------------------------------------------- Figs 5, 6
@pytest.mark.parametrize("x", ["epoch", "depth"])
def test_trajectories_label_their_seed_count(x):
    fig = plots.draw_trajectories(weights_summary(["base"], n_seeds=2), x=x)
    assert_no_empty_panels(fig)
    assert (
        fig.legends[0].get_title().get_text()
        == "mean and 95 % t-interval over 2 seeds; ones not drawn (constant weights)"
    )
    assert legend_texts(fig) == ["kaiming normal"]  # constant inits left out, and the legend says so


# --------------------------------------------------------------------------- Fig 7
def test_variant_factors_parse_grid_names():
    assert plots.variant_factors("bn-leaky-l2_0.0001-l1_1e-05") == ["bn", "leaky", "l2_0.0001", "l1_1e-05"]
    assert plots.variant_factors("base") == []
    assert plots.variant_factors("depth12") == ["depth12"]


@pytest.mark.slow
def test_variants_with_17_variants_stay_readable():
    variants = ablation_variants()
    assert len(variants) == 17
    fig = plots.draw_variants(weights_summary(variants))
    axes = data_axes(fig)
    assert_no_empty_panels(fig)
    rows = [ax.get_ylabel() for ax in axes if ax.get_ylabel()]
    assert sorted(rows) == ["binary", "bn", "l1_1e-05", "l2_0.0001", "leaky"]  # one row per factor
    assert len(axes) == 5 * len(plots.VARIANT_STATS)
    legends = [ax.get_legend() for ax in axes if ax.get_legend()]
    assert len(legends) == 5 and all(len(leg.get_texts()) <= 3 for leg in legends)
    assert legends[rows.index("bn")].get_texts()[0].get_text() == "with bn (8)"


def test_variants_few_draw_one_line_each_with_band():
    fig = plots.draw_variants(weights_summary(["base", "depth6", "depth9"], n_seeds=2))
    assert_no_empty_panels(fig)
    assert legend_texts(fig) == ["base", "depth6", "depth9"]
    assert "95 % t-interval over 2 seeds" in fig.legends[0].get_title().get_text()


# --------------------------------------------------------------------------- CLI
def test_plot_command_writes_pdf_and_png(tmp_path):
    table = tmp_path / "training_summary.csv"
    training_summary().to_csv(table, index=False)
    pdf, png = tmp_path / "f.pdf", tmp_path / "f.png"
    assert (
        cli.main(
            [
                "plot",
                "fig1_training",
                "--table",
                str(table),
                "--style",
                str(STYLE),
                "--pdf",
                str(pdf),
                "--png",
                str(png),
            ]
        )
        == 0
    )
    assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")
    # the same table gives the same bytes (no creation date): a rerun after a kill is byte-identical
    again = [tmp_path / "g.pdf", tmp_path / "g.png"]
    argv = ["plot", "fig1_training", "--table", str(table), "--style", str(STYLE), "--pdf", str(again[0])]
    assert cli.main([*argv, "--png", str(again[1])]) == 0
    assert again[0].read_bytes() == pdf.read_bytes() and again[1].read_bytes() == png.read_bytes()


# --------------------------------------------------------------------------- given weights (experiment 2)
def resnet18_layers() -> list[str]:
    """torchvision's ResNet-18 weight layers in depth order (models.build numbers them 1..21)."""
    names = ["conv1"]
    for stage in range(1, 5):
        for block in range(2):
            names += [f"layer{stage}.{block}.conv1", f"layer{stage}.{block}.conv2"]
            if stage > 1 and block == 0:
                names.append(f"layer{stage}.0.downsample.0")
    return [*names, "fc"]


def given_weight_hist(rng: np.random.Generator) -> pd.DataFrame:
    """A combined weight_hist table of one checkpoint ("epoch 0") of given ResNet-18 weights: rows
    sorted by layer name, as stats-combine writes them (fc between conv1 and layer1...)."""
    rows = []
    for layer in resnet18_layers():
        for param in ("weight", "bias") if layer == "fc" else ("weight",):
            x = rng.normal(0, 0.05, 500)
            dens, edges = np.histogram(x, bins=20, density=True)
            rows += [
                dict(
                    variant="base",
                    init="torch_default",
                    seed=0,
                    epoch=0,
                    layer=layer,
                    param=param,
                    count=x.size,
                    mean=x.mean(),
                    std=x.std(),
                    min=x.min(),
                    max=x.max(),
                    x=(a + b) / 2,
                    density=d,
                )
                for a, b, d in zip(edges[:-1], edges[1:], dens)
            ]
    return pd.DataFrame(rows).sort_values(["layer", "param"], kind="stable").reset_index(drop=True)


def given_weights_summary() -> pd.DataFrame:
    rows = [
        dict(
            variant="base",
            init="torch_default",
            epoch=0,
            layer=layer,
            depth=depth,
            param="weight",
            statistic=stat,
            mean=0.05 + 0.01 * depth,
            ci_low=np.nan,
            ci_high=np.nan,
            n_seeds=1,
        )
        for depth, layer in enumerate(resnet18_layers(), start=1)
        for stat in plots.TRAJECTORY_STATS
    ]
    return pd.DataFrame(rows).sort_values("layer", kind="stable")


def titles(fig: plt.Figure) -> list[str]:
    return [ax.get_title().splitlines()[0] for ax in data_axes(fig)]


def test_layer_order_is_depth_not_alphabet():
    names = sorted(resnet18_layers())  # alphabetical: conv1, fc, layer1.0.conv1, ...
    assert names[1] == "fc"
    assert plots.layer_order(pd.DataFrame({"layer": names})) == resnet18_layers()  # from the names alone
    assert plots.layer_order(pd.DataFrame({"layer": ["conv10", "conv2", "fc1", "conv1"]})) == [
        "conv1",
        "conv2",
        "conv10",
        "fc1",
    ]
    shuffled = pd.DataFrame({"layer": ["b", "a", "c"], "depth": [2, 3, 1]})
    assert plots.layer_order(shuffled) == ["c", "b", "a"]  # a depth column decides where there is one
    assert plots.evenly(list(range(21)), 6) == [0, 4, 8, 12, 16, 20]


@pytest.mark.slow
def test_given_weights_fig2_has_one_panel_per_tensor_in_depth_order_on_one_page():
    fig = plots.draw_weight_distributions(given_weight_hist(np.random.default_rng(0)))
    axes = data_axes(fig)
    assert_no_empty_panels(fig)
    assert len(fig.axes) == len(axes) == 22  # 21 weights and the fc bias: no "no bias" panels, no spare axes
    assert titles(fig) == [f"{layer} weight" for layer in resnet18_layers()] + ["fc bias"]  # no before/after columns
    assert fig.get_size_inches()[1] <= 9.5  # fits a page
    assert "epoch 0, the only checkpoint" in fig.legends[0].get_title().get_text()


@pytest.mark.slow
def test_given_weights_fig2_of_a_deep_net_keeps_to_a_page_and_says_what_it_left_out():
    df = given_weight_hist(np.random.default_rng(0))
    deep = pd.concat([df.assign(layer=df["layer"] + f".copy{k}") for k in range(3)], ignore_index=True)  # 66 tensors
    fig = plots.draw_weight_distributions(deep)
    assert len(data_axes(fig)) == 24 and fig.get_size_inches()[1] <= 9.5
    assert "24 of 66 tensors" in fig.legends[0].get_title().get_text()


def test_given_weights_fig6_names_the_layers_down_the_y_axis_in_depth_order():
    fig = plots.draw_trajectories(given_weights_summary(), x="depth")
    axes = data_axes(fig)
    assert_no_empty_panels(fig)
    assert len(axes) == len(plots.TRAJECTORY_STATS)
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == resnet18_layers()
    assert axes[0].yaxis_inverted()  # first layer at the top
    assert 2 <= fig.get_size_inches()[1] <= 9.5


def test_given_weights_fig3_draws_one_checkpoint_without_before_after():
    df = feature_hist(np.random.default_rng(0))
    df = df[df["epoch"] == 0]
    fig = plots.draw_features(df)
    assert_no_empty_panels(fig)
    for ax in data_axes(fig):
        assert {line.get_gid() for line in ax.get_lines()} == {f"{i}|0" for i in INITS[:2]}  # one line per drawn init
        header = next(t.get_text() for t in ax.texts if t.get_gid() == "std-header" and "std, epoch" in t.get_text())
        assert header == "std, epoch 0:"
    assert [t for t in legend_texts(fig) if t.startswith("epoch")] == ["epoch 0"]


def test_training_figure_without_training_says_so():
    df = training_summary()
    fig = plots.draw_training(df[(df["epoch"] == 0) & (df["split"] != "train")])
    assert not fig.axes  # no empty axes ...
    assert "Nothing was trained" in " ".join(t.get_text() for t in fig.texts)  # ... but words


@pytest.mark.slow
def test_many_layers_are_capped_and_the_figures_say_so():
    hist = weight_hist(np.random.default_rng(0))
    deep = pd.concat([hist.assign(layer=hist["layer"] + f"_{k}") for k in range(8)], ignore_index=True)  # 16 layers
    fig = plots.draw_weight_distributions(deep)
    assert len({t.split()[0] for t in titles(fig)}) == plots.MAX_ROWS and fig.get_size_inches()[1] <= 9.5
    assert "6 of 16 layers" in fig.legends[0].get_title().get_text()
    summary = given_weights_summary().assign(epoch=3)
    fig = plots.draw_trajectories(pd.concat([summary.assign(epoch=0), summary]), x="epoch")
    assert titles(fig)[: plots.MAX_COLUMNS] == plots.evenly(resnet18_layers(), plots.MAX_COLUMNS)
    assert "6 of 21 layers" in fig.legends[0].get_title().get_text()


def test_depth_profile_names_layers_on_the_x_axis():
    fig = plots.draw_trajectories(weights_summary(["base"]), x="depth")
    for ax in data_axes(fig):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "conv2", "conv3"]


def test_emission_without_chosen_layers_keeps_to_a_page_in_depth_order():
    base = em_ab(np.random.default_rng(0))
    conv1 = base[base["layer"] == "conv1"]
    table = pd.concat([conv1.assign(layer=name) for name in resnet18_layers()[:-1]], ignore_index=True)
    fig = plots.draw_emission(table.sort_values("layer", kind="stable"))
    rows = [t.split()[0] for t in titles(fig)[::2]]
    assert rows == plots.evenly(resnet18_layers()[:-1], plots.MAX_ROWS) and fig.get_size_inches()[1] <= 9.5
    assert "6 of 20 conv layers (evenly spaced" in fig._suptitle.get_text()
    chosen = plots.draw_emission(table, layers=["layer4.1.conv2", "conv1"])  # as configured, in that order
    assert [t.split()[0] for t in titles(chosen)[::2]] == ["layer4.1.conv2", "conv1"]
    assert "2 of 20 conv layers (plots.emission_layers)" in chosen._suptitle.get_text()


# --------------------------------------------------------------------------- Fig 8 (ESD)
def spectrum_rows(weights: dict[str, np.ndarray], init: str, epoch: int) -> list[dict]:
    """Rows of the spectrum table (stats.spectrum_table's columns) for one run's weights."""
    rows = []
    for layer, w in weights.items():
        s = np.linalg.svd(w.reshape(w.shape[0], -1), compute_uv=False)
        rows += [
            {
                "variant": "base",
                "init": init,
                "seed": 0,
                "epoch": epoch,
                "layer": layer,
                "index": i,
                "singular_value": v,
            }
            for i, v in enumerate(s)
        ]
    return rows


@pytest.mark.slow
def test_esd_figure_fits_each_layer_like_weightwatcher():
    """Fig 8: one row per layer in depth order, the first and last checkpoint, for the first init
    that is neither constant nor orthogonal; a linear layer's alpha and xmin are WeightWatcher's
    (spectral.spectral_stats, the weights table's alpha)."""
    from dnndist import spectral

    rng = np.random.default_rng(1)
    trained = {"conv1": rng.normal(size=(16, 3, 3, 3)), "fc1": rng.standard_t(2.5, (200, 300)) * 0.05}
    fresh = {"conv1": rng.normal(size=(16, 3, 3, 3)), "fc1": rng.normal(size=(200, 300)) * 0.05}
    rows = []
    for init in ("orthogonal", "ones", "kaiming_normal"):
        rows += spectrum_rows(fresh, init, 0) + spectrum_rows(trained, init, 3)
    fig = plots.draw_esd_layers(pd.DataFrame(rows))
    axes = data_axes(fig)
    assert [ax.get_title().split(":")[0] for ax in axes] == [
        "conv1, epoch 0",
        "conv1, epoch 3",
        "fc1, epoch 0",
        "fc1, epoch 3",
    ]
    assert "kaiming normal init" in fig._suptitle.get_text()
    assert all(ax.get_xscale() == "log" and "esd" in {a.get_gid() for a in ax.get_children()} for ax in axes)
    st = spectral.spectral_stats(trained["fc1"])
    assert st["alpha_fitted"] == 1 and f"alpha = {st['alpha']:.2f}" in axes[3].get_title()
    xmin = next(line for line in axes[3].lines if line.get_gid() == "xmin")
    assert xmin.get_xdata()[0] == pytest.approx(st["alpha_xmin"])


def test_esd_panels_say_when_alpha_is_not_to_be_read():
    """A flat spectrum (orthogonal, slightly perturbed: fitted, absurd alpha) and a 10-eigenvalue
    matrix carry their warning in the panel's title; a Gaussian 200 x 300 matrix none."""
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((300, 200)))
    cases = {
        "flat ESD: no tail exponent": q.T + 1e-4 * rng.standard_normal((200, 300)),
        "10 eigenvalues: uncertain": rng.standard_t(2.5, (10, 300)),
        "": rng.standard_normal((200, 300)),
    }
    for warning, w in cases.items():
        evals = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
        fit = plots.esd_fit(evals)
        title = plots.draw_esd(evals, fit.alpha, fit.xmin, title="fc").axes[0].get_title()
        assert fit.fitted and (warning in title if warning else "[" not in title), (warning, title)


def test_esd_figure_of_one_checkpoint_and_of_nothing():
    rows = spectrum_rows({"fc1": np.random.default_rng(2).normal(size=(50, 40))}, "xavier_uniform", 0)
    assert len(data_axes(plots.draw_esd_layers(pd.DataFrame(rows)))) == 1  # given weights: one checkpoint
    assert "no spectrum" in plots.draw_esd_layers(pd.DataFrame()).texts[0].get_text()


# --------------------------------------------------------------------------- Fig 0
def test_glance_draws_a_ridge_per_init_and_keeps_constant_inits_off_the_axes():
    """One panel per layer, one row per init (labelled); the axis spans the random inits' values,
    the ones' point mass at 1 is an arrow at the edge with its value, not a stretched axis."""
    df = weight_hist(np.random.default_rng(0))
    fig = plots.draw_glance(df)
    axes = data_axes(fig)
    assert [ax.get_title() for ax in axes] == ["conv1", "fc1"]
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == [plots.INIT_LABELS[i] for i in reversed(INITS)]
    for ax in axes:
        w = df[(df["layer"] == ax.get_title()) & (df["param"] == "weight") & (df["init"] != "ones")]
        lo, hi = ax.get_xlim()
        assert lo <= w["min"].min() and w["max"].max() <= hi
    conv1 = axes[0]
    assert conv1.get_xlim()[1] >= 3.0 and "point" in {c.get_gid() for c in conv1.collections}  # 1 is inside: a spike
    assert "outline: epoch 0 (initialisation); filled: epoch 2" in fig._suptitle.get_text()
    fresh = plots.draw_glance(df[df["epoch"] == 0])  # one checkpoint: the random inits end below 0.33
    for ax in data_axes(fresh):
        assert ax.get_xlim()[1] < 1.0 and [t.get_text() for t in ax.texts] == ["1 →"]  # outside: an arrow
    assert "epoch 0, the only checkpoint" in fresh._suptitle.get_text()


# --------------------------------------------------------------------------- Fig 3 axes
def test_feature_axes_fit_the_densities_with_the_std_list_beside_them():
    df = feature_hist(np.random.default_rng(0))
    fig = plots.draw_features(df)
    for ax in data_axes(fig):
        top = df[~df["init"].isin(plots.CONSTANT_INITS)]["density"].max()
        assert ax.get_ylim()[1] < 10 * top  # no decades of headroom for text
        assert all(t.get_position()[0] > 1.0 for t in ax.texts)  # the std list is right of the panel

"""Init formulas: fan_in/fan_out, and fresh weights of every paper-CNN layer against theory."""

from __future__ import annotations

import math

import matplotlib.colors
import pytest
import torch
from torch import nn

from dnndist import inits, models
from dnndist.settings import ModelSettings, RunSettings

PAPER = ModelSettings(
    name="paper_cnn", depth=3, width=16, hidden=512, norm="none", activation="relu", negative_slope=0.3
)
GAIN = math.sqrt(2.0)
DRAWS = 20  # pool draws so that sampling error is small for conv1 (432 weights)


def test_fan_in_of_conv_is_cin_times_kernel():
    # the forum question: Conv2d weight (out=8, in=3, 5, 5) has fan_in 75, not 3
    assert inits.fans((8, 3, 5, 5)) == (75, 200)
    assert inits.fans((512, 1024)) == (1024, 512)
    for shape in [(8, 3, 5, 5), (16, 16, 3, 3), (10, 512), (4, 2, 1, 7)]:
        assert inits.fans(shape) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


def test_torch_default_bound_matches_forum_number():
    # PyTorch's Conv2d(16, 33, 3) draws U(-k, k), k = sqrt(1/(16*9)) = 0.0833
    t = inits.theory("torch_default", (33, 16, 3, 3), GAIN)
    assert t["bound"] == pytest.approx(0.08333, abs=1e-4)
    conv = nn.Conv2d(16, 33, 3)
    assert conv.weight.abs().max() <= t["bound"]


def draws(init: str, bias: str = "auto") -> dict[str, tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]]:
    model = models.build(PAPER)
    out: dict[str, list] = {}
    for seed in range(DRAWS):
        inits.apply(model, init, GAIN, bias, seed)
        for name, m in inits.weight_modules(model):
            out.setdefault(name, []).append((m.weight.detach().clone(), m.bias.detach().clone()))
    shapes = {n: tuple(m.weight.shape) for n, m in inits.weight_modules(model)}
    return {n: (torch.stack([w for w, _ in v]), torch.stack([b for _, b in v]), shapes[n]) for n, v in out.items()}


@pytest.mark.parametrize(
    "init", ["kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal", "torch_default"]
)
def test_empirical_std_matches_formula_per_layer(init):
    for name, (w, b, shape) in draws(init).items():
        fan_in, fan_out = math.prod(shape[1:]), shape[0] * math.prod(shape[2:])
        expected = {
            "kaiming_normal": GAIN / math.sqrt(fan_in),
            "kaiming_uniform": GAIN * math.sqrt(3 / fan_in) / math.sqrt(3),
            "xavier_normal": GAIN * math.sqrt(2 / (fan_in + fan_out)),
            "xavier_uniform": GAIN * math.sqrt(6 / (fan_in + fan_out)) / math.sqrt(3),
            "orthogonal": GAIN / math.sqrt(max(shape[0], fan_in)),
            "torch_default": 1 / math.sqrt(fan_in) / math.sqrt(3),
        }[init]
        assert inits.theory(init, shape, GAIN)["std"] == pytest.approx(expected, rel=1e-12)
        n = w.numel()
        se = expected / math.sqrt(2 * n)  # standard error of a sample std
        assert abs(w.std().item() - expected) < 5 * se + 1e-12, (name, w.std().item(), expected)
        assert abs(w.mean().item()) < 5 * expected / math.sqrt(n), name
        # biases: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for random inits
        k = 1 / math.sqrt(fan_in)
        assert b.abs().max() <= k and b.abs().max() > 0.8 * k


@pytest.mark.parametrize("init", ["kaiming_uniform", "xavier_uniform", "torch_default"])
def test_uniform_inits_fill_their_bounds(init):
    for name, (w, _, shape) in draws(init).items():
        bound = inits.theory(init, shape, GAIN)["bound"]
        assert w.abs().max() <= bound + 1e-7
        assert w.abs().max() > 0.98 * bound, name


def test_orthogonal_rows_or_columns_are_orthonormal():
    model = models.build(PAPER)
    inits.apply(model, "orthogonal", GAIN, "auto", 3)
    for name, m in inits.weight_modules(model):
        mat = m.weight.detach().reshape(m.weight.shape[0], -1).double()
        gram = mat @ mat.T if mat.shape[0] <= mat.shape[1] else mat.T @ mat
        assert torch.allclose(gram, GAIN**2 * torch.eye(len(gram), dtype=torch.float64), atol=1e-5), name


@pytest.mark.parametrize("init,value", [("ones", 1.0), ("zeros", 0.0)])
def test_constant_inits_set_weights_and_biases(init, value):
    model = models.build(PAPER)
    inits.apply(model, init, GAIN, "auto", 0)
    for _, m in inits.weight_modules(model):
        assert torch.all(m.weight == value) and torch.all(m.bias == value)
    inits.apply(model, init, GAIN, "torch_default", 0)
    assert not torch.all(model.conv1.bias == value)


def test_same_seed_same_weights_and_different_seed_differs():
    a, b, c = (models.build(PAPER) for _ in range(3))
    for m, seed in ((a, 1), (b, 1), (c, 2)):
        inits.apply(m, "kaiming_normal", GAIN, "auto", seed)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


LEAKY = ModelSettings(activation="leaky_relu", negative_slope=0.3)


def test_gain_conventions():
    relu = ModelSettings(activation="relu")
    # torch: what torch.nn.init's defaults give (xavier_*/orthogonal gain 1; kaiming the nonlinearity's gain)
    for init in ("xavier_normal", "xavier_uniform", "orthogonal"):
        assert inits.gain_for(init, "torch", relu) == 1.0
        assert inits.gain_for(init, "relu", relu) == pytest.approx(math.sqrt(2))
    assert inits.gain_for("kaiming_normal", "torch", relu) == pytest.approx(math.sqrt(2))
    assert inits.gain_for("kaiming_uniform", "torch", LEAKY) == pytest.approx(math.sqrt(2 / (1 + 0.09)))
    assert inits.gain_for("xavier_normal", "relu", LEAKY) == pytest.approx(math.sqrt(2 / (1 + 0.09)))
    assert inits.gain_for("orthogonal", 0.5, relu) == 0.5
    with pytest.raises(ValueError, match="gain convention"):
        inits.gain_for("orthogonal", "auto", relu)


@pytest.mark.parametrize(
    "init,fn",
    [
        ("xavier_normal", nn.init.xavier_normal_),
        ("xavier_uniform", nn.init.xavier_uniform_),
        ("orthogonal", nn.init.orthogonal_),
        ("kaiming_normal", lambda w, generator: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)),
        ("kaiming_uniform", lambda w, generator: nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=generator)),
    ],
)
def test_default_convention_equals_torch_nn_init_defaults(init, fn):
    """A model built with the default config draws what torch.nn.init with default arguments
    draws (same generator stream), layer by layer: bit for bit for every init."""
    from dnndist import config as dcfg

    cfg = dcfg.validate({"data": {"source": "synthetic", "valid_size": 100}, "inits": [init]}, check_paths=False)
    assert cfg["init"]["gain"] == "torch"
    settings = RunSettings.from_dict(dcfg.run_settings(cfg, dcfg.runs(cfg)[0]))
    model = models.build(settings.model)
    gain = inits.gain_for(init, settings.init_scheme.gain, settings.model)
    inits.apply(model, init, gain, "auto", 7)
    ref = models.build(settings.model)
    g = torch.Generator().manual_seed(7)
    for (name, m), (_, r) in zip(inits.weight_modules(model), inits.weight_modules(ref)):
        with torch.no_grad():
            fn(r.weight, generator=g)
            nn.init.uniform_(
                r.bias,
                -1 / math.sqrt(inits.fans(tuple(r.weight.shape))[0]),
                1 / math.sqrt(inits.fans(tuple(r.weight.shape))[0]),
                generator=g,
            )
        torch.testing.assert_close(
            m.weight, r.weight, rtol=1e-6, atol=0, msg=name
        )  # same draws (formulas may differ by an ulp)
        std = inits.theory(init, tuple(m.weight.shape), gain)["std"]
        if init.startswith(("xavier", "orthogonal")):  # gain 1 theory
            assert std == pytest.approx(inits.theory(init, tuple(m.weight.shape), 1.0)["std"])


def test_xavier_and_kaiming_differ_under_torch_convention_but_not_relu():
    """conv2/conv3 of the paper CNN have fan_in = fan_out: with the ReLU gain on every init,
    xavier_normal and kaiming_normal are the same distribution (the defect of the old default)."""
    relu = ModelSettings(activation="relu")
    for shape in ((16, 16, 3, 3),):
        tx = inits.theory("xavier_normal", shape, inits.gain_for("xavier_normal", "relu", relu))["std"]
        tk = inits.theory("kaiming_normal", shape, inits.gain_for("kaiming_normal", "relu", relu))["std"]
        assert tx == pytest.approx(tk)
        tx = inits.theory("xavier_normal", shape, inits.gain_for("xavier_normal", "torch", relu))["std"]
        assert tx == pytest.approx(tk / math.sqrt(2))


def test_an_init_declared_in_a_fixture_is_validated_trained_measured_and_drawn(monkeypatch, tmp_path):
    """Adding an init is one InitSpec (conventions.INITS): declared here in a fixture, after every
    module was imported, it is in the schema's enum, draws with its family's formula, trains, is
    extracted and measured against its theory, and is drawn in its own colour in the demo's figures."""
    from dnndist import config, conventions, data, extract, plots, stats, train
    from dnndist.settings import DataSettings, ExtractSettings, StatsSettings

    from .conftest import EX, tiny_config

    spec = conventions.InitSpec("kaiming_normal_copy", "kaiming", "normal", "#123456", paper=False)
    monkeypatch.setitem(conventions.INITS, spec.name, spec)
    assert spec.name in conventions.INIT_NAMES and (conventions.ORTHOGONAL, spec.name) in conventions.ordering_pairs()
    cfg = config.validate(tiny_config(tmp_path, inits=[spec.name, "ones"], extract=EX), check_paths=False)
    s = ExtractSettings.from_dict(config.extract_settings(cfg, config.Run("base", spec.name, 0)))
    synthetic = {"train_size": 400, "test_size": 100, "image_size": 32, "seed": 0}
    store = data.build_store(
        DataSettings.from_dict({"source": "synthetic", "synthetic": synthetic}), tmp_path / "data.zarr"
    )
    run_dir = tmp_path / "runs" / "base" / spec.name / "seed0"
    train.train_run(s, store, run_dir, threads=1)
    extract.extract_weights(s, run_dir / "checkpoints", store, run_dir / "weights.zarr")
    groups = {k: v.compute() for k, v in stats.open_layer_groups(run_dir / "weights.zarr").items()}
    w = stats.weight_table(groups, StatsSettings())
    ratio = w[(w["statistic"] == "std_ratio_to_init") & (w["param"] == "weight") & (w["epoch"] == 0)]
    assert set(ratio["init"]) == {spec.name} and len(ratio) == 5
    assert ratio["value"].between(0.85, 1.15).all()  # kaiming normal's std, drawn: within sampling error
    fig = plots.draw_glance(stats.weight_histograms(groups, [0, 1]))
    colours = set()
    for artist in (a for ax in fig.axes for a in ax.get_children()):
        for get in ("get_color", "get_facecolor", "get_edgecolor"):
            value = getattr(artist, get, lambda: None)()
            for c in [value] if isinstance(value, str) or (value is not None and len(value) == 4) else value or []:
                colours.add(matplotlib.colors.to_hex(c))
    assert "#123456" in colours and spec.label in {t.get_text() for ax in fig.axes for t in ax.get_yticklabels()}
    plots.plt.close(fig)

"""The training recipe of the CIFAR ResNet runs (dnndist.recipe, used by dnndist.train):
flip-and-crop augmentation against hand-computed references, its counter-based randomness,
the one-cycle learning rate per step against an independent computation, label smoothing,
Nesterov SGD, the config checks, and the whole recipe end to end on CPU (stacked == per-run
in float64, the paper CNN trained a few steps with the recipe)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dnndist import config as dcfg
from dnndist import data, recipe, train
from dnndist.settings import DataSettings, RunSettings

from .conftest import tiny_config

RECIPE = {
    "optimizer": "sgd",
    "nesterov": True,
    "momentum": 0.9,
    "lr": 0.05,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "warmup": 0.25,
    "warmup_div": 10.0,
    "augment": "flip_crop",
    "label_smoothing": 0.1,
    "batch_size": 64,
    "epochs": 2,
    "checkpoints": [0, 2],
    "eval_batch_size": 500,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "dataset.zarr"
    settings = {"source": "synthetic", "synthetic": {"train_size": 400, "test_size": 100, "image_size": 32, "seed": 0}}
    return data.build_store(DataSettings.from_dict(settings), out)


def _settings(tmp_path, runs, **over):
    cfg = dcfg.validate(
        tiny_config(
            tmp_path / "results", inits=sorted({i for i, _ in runs}), train={**RECIPE, **over.pop("train", {})}, **over
        ),
        check_paths=False,
    )
    return [RunSettings.from_dict(dcfg.run_settings(cfg, dcfg.Run("base", i, s))) for i, s in runs]


# ---------------------------------------------------------------- augmentation
def test_crop_flip_on_a_hand_computed_example():
    img = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    same = recipe.crop_flip(img, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]))
    assert torch.equal(same, img)
    # down 1 (row y reads row y+1), right 1 (column x reads column x+1), zero where that is outside
    shifted = recipe.crop_flip(img, torch.tensor([1]), torch.tensor([1]), torch.tensor([False]))
    assert shifted[0, 0].tolist() == [[5, 6, 0], [8, 9, 0], [0, 0, 0]]
    # mirrored, then read one row up: column x reads column 2 - x
    flipped = recipe.crop_flip(img, torch.tensor([-1]), torch.tensor([0]), torch.tensor([True]))
    assert flipped[0, 0].tolist() == [[0, 0, 0], [3, 2, 1], [6, 5, 4]]
    # mirrored and shifted: column x reads column (2 - x) - 1
    both = recipe.crop_flip(img, torch.tensor([0]), torch.tensor([-1]), torch.tensor([True]))
    assert both[0, 0].tolist() == [[2, 1, 0], [5, 4, 0], [8, 7, 0]]


def test_flip_crop_is_the_standard_pad_crop_flip():
    """Per image: pad by 4 with zeros, take the 32x32 window at offset (dy + 4, dx + 4), mirror
    it when the flip bit is set; the offsets and flips come from the image's random word."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    words = recipe.draws(torch.tensor([7]), 123, 64).reshape(-1)
    out = recipe.augment(images, words, "flip_crop")
    assert out.dtype == torch.uint8 and out.shape == images.shape
    padded = F.pad(images, (4, 4, 4, 4))
    offsets, flips = set(), 0
    for n in range(64):
        w = int(words[n])
        oy, ox, flip = ((w >> 1) & 0xFFFF) % 9, ((w >> 17) & 0x7FFF) % 9, w & 1
        ref = padded[n, :, oy : oy + 32, ox : ox + 32]
        ref = ref.flip(-1) if flip else ref
        assert torch.equal(out[n], ref), n
        offsets.add((oy, ox))
        flips += flip
    assert len(offsets) > 20 and 16 <= flips <= 48  # it does crop and flip, in varied ways
    assert torch.equal(recipe.augment(images, words, "none"), images)


def test_draws_are_a_pure_function_of_seed_step_and_position():
    a = recipe.draws(torch.tensor([0, 1, 5]), 10, 8)
    assert a.shape == (3, 8) and int(a.min()) >= 0 and int(a.max()) < 2**32
    assert torch.equal(a, recipe.draws(torch.tensor([0, 1, 5]), torch.tensor(10), 8))  # int or tensor step
    assert torch.equal(a[1], recipe.draws(torch.tensor([1]), 10, 8)[0])  # alone = in a stack
    assert torch.equal(a[:, :4], recipe.draws(torch.tensor([0, 1, 5]), 10, 4))  # a short last batch
    assert not torch.equal(a, recipe.draws(torch.tensor([0, 1, 5]), 11, 8))  # the step matters
    assert len(set(a.flatten().tolist())) == 24
    big = recipe.draws(torch.arange(4), 0, 4096).flatten()
    assert abs((big & 1).double().mean().item() - 0.5) < 0.02  # fair flips
    counts = torch.bincount(((big >> 1) & 0xFFFF) % 9, minlength=9).double() / len(big)
    assert (counts - 1 / 9).abs().max() < 0.01  # uniform offsets


def test_mix32_matches_plain_integer_arithmetic():
    def ref(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    assert recipe.mix32(torch.tensor(xs)).tolist() == [ref(x) for x in xs]


# ---------------------------------------------------------------- schedule
def _onecycle_ref(t: int, lr: float, total: int, warmup: float, div: float) -> float:
    w = warmup * total
    return lr / div + (lr - lr / div) * t / w if t < w else lr * (total - t) / (total - w)


def test_onecycle_formula():
    lrs = [float(recipe.onecycle_lr(t, 0.4, 100, 0.2, 10.0)) for t in range(100)]
    assert lrs[0] == pytest.approx(0.04) and lrs[20] == pytest.approx(0.4)
    assert max(lrs) == pytest.approx(0.4) and lrs[99] == pytest.approx(0.4 / 80)
    assert lrs == pytest.approx([_onecycle_ref(t, 0.4, 100, 0.2, 10.0) for t in range(100)], rel=1e-12)
    assert float(recipe.onecycle_lr(0, 0.4, 100, 0.0, 10.0)) == pytest.approx(0.4)  # no warm-up


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "train_over,message",
    [
        ({"optimizer": "adam"}, "config key 'train.nesterov': Nesterov momentum needs optimizer sgd"),
        ({"momentum": 0.0}, "config key 'train.nesterov': Nesterov momentum needs optimizer sgd"),
        ({"augment": "mixup"}, "train.augment"),
        ({"schedule": "cosine"}, "train.schedule"),
        ({"warmup": 1.0}, "train.warmup"),
        ({"label_smoothing": -0.1}, "train.label_smoothing"),
    ],
)
def test_bad_recipe_config_is_one_clear_line(tmp_path, train_over, message):
    with pytest.raises(dcfg.ConfigError, match=message):
        dcfg.validate(tiny_config(tmp_path, train={**RECIPE, **train_over}), check_paths=False)


def test_recipe_levels_name_variants():
    assert dcfg.level_label("train.augment", "flip_crop") == "flipcrop"
    assert dcfg.level_label("train.schedule", "onecycle") == "onecycle"
    assert dcfg.level_label("train.label_smoothing", 0.1) == "ls_0.1"


# ---------------------------------------------------------------- end to end
def test_trainer_batches_are_the_augmented_images(tmp_path, store):
    """The batch a run trains on is its images flip-cropped by its own draws (seed, step)."""
    settings = _settings(tmp_path, [("kaiming_normal", 3), ("xavier_uniform", 4)])
    ds = data.make_splits(data.open_store(store), **settings[0].split.kwargs())
    t = train.Trainer(settings, ds, torch.device("cpu"))
    idx = torch.stack([torch.arange(0, 16), torch.arange(100, 116)])
    x, y = t.batch(idx, 7)
    plain = train.Trainer(_settings(tmp_path, [("kaiming_normal", 3)], train={"augment": "none"}), ds, t.device)
    assert not torch.equal(x[0], plain.batch(idx[:1], 7)[0][0])  # augmentation changed the inputs
    for k, seed in enumerate((3, 4)):
        words = recipe.draws(torch.tensor([seed]), 7, 16)[0]
        ref = recipe.augment(ds.images["train"][idx[k]], words, "flip_crop")
        assert torch.equal(x[k], data.prepare(ref, ds.mean, ds.std))
        assert torch.equal(y[k], ds.labels["train"][idx[k]])


@pytest.mark.slow
def test_the_recipe_trains_and_the_lr_follows_the_formula(tmp_path, store):
    """The GPU recipe's machinery on CPU: Nesterov SGD, one-cycle lr, flip_crop, label
    smoothing; the lr of every update is the formula's. The schedule does not depend on the
    model, so the paper CNN trains here (a CIFAR ResNet-18 took 126 s for the same check; its
    layers are tested in test_resnet.py)."""
    (s,) = _settings(
        tmp_path,
        [("kaiming_normal", 0)],
        data={"source": "synthetic", "valid_size": 300, "random_size": 32, "synthetic": {"train_size": 400}},
        train={"batch_size": 50, "epochs": 2},
    )
    seen: list[float] = []
    real = train.build_optimizer

    def spy(*a, **k):
        opt = real(*a, **k)
        opt.register_step_pre_hook(lambda o, args, kw: seen.append(float(o.param_groups[0]["lr"])))
        return opt

    mp = pytest.MonkeyPatch()
    mp.setattr(train, "build_optimizer", spy)
    try:
        summary = train.train_run(s, store, tmp_path / "run", threads=2, progress=False)
    finally:
        mp.undo()
    assert summary["status"] == "completed" and summary["epochs_trained"] == 2
    total = 2 * math.ceil(100 / 50)
    ref = [_onecycle_ref(t, 0.05, total, 0.25, 10.0) for t in range(total)]
    assert seen == pytest.approx(ref, rel=1e-6)  # float32 lr tensor
    assert seen[0] == pytest.approx(0.005, rel=1e-6) and seen[1] == pytest.approx(0.05, rel=1e-6)


def test_label_smoothing_is_the_training_loss_only(monkeypatch):
    """Stack losses (the training objective) use the smoothing, alike for one run and a wide
    stack; the evaluation sums stay the plain cross-entropy."""
    from dnndist import inits, models, stacked
    from dnndist.settings import ModelSettings

    ms = ModelSettings()
    nets = []
    for seed in range(2):
        net = models.build(ms, 3, 10, 32).double()
        inits.apply(net, "kaiming_normal", inits.gain_for("kaiming_normal", "torch", ms), "auto", seed)
        nets.append(net)
    x = torch.randn(2, 6, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([[0, 1, 2, 3, 4, 5], [9, 8, 7, 6, 5, 4]])
    fmt = torch.contiguous_format
    wide, _ = stacked.StackedCNN(nets).losses(x, y, fmt, 0.1)
    for i, net in enumerate(nets):
        out = net(x[i])
        smooth = F.cross_entropy(out, y[i], label_smoothing=0.1)
        assert not torch.allclose(smooth, F.cross_entropy(out, y[i]))
        torch.testing.assert_close(stacked.Single(net).losses(x[i : i + 1], y[i : i + 1], fmt, 0.1)[0][0], smooth)
        torch.testing.assert_close(wide[i], smooth)
        plain, _ = stacked.Single(net).eval_sums(x[i], y[i], fmt)
        torch.testing.assert_close(plain[0], F.cross_entropy(out, y[i], reduction="sum"))


def test_sgd_builds_for_cuda_graphs(tmp_path):
    """SGD takes no ``capturable`` flag (Adam does): asking for a capturable optimiser builds
    Nesterov SGD all the same, at a tensor lr when a schedule drives it."""
    (s,) = _settings(tmp_path, [("kaiming_normal", 0)])
    net = torch.nn.Linear(3, 2)
    lr = torch.tensor(0.1)
    opt = train.build_optimizer(net, s.train, torch.device("cpu"), capturable=True, lr=lr)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"] and opt.param_groups[0]["lr"] is lr

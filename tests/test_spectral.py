"""dnndist.spectral against WeightWatcher (the reference tool), and on matrices with a known answer.

The WeightWatcher comparisons run ``WeightWatcher(model).analyze(mp_fit=True)``: default
settings, plus the Marchenko-Pastur fit that gives ``mp_softrank`` (it only adds columns).
``pytest -s`` prints the comparison tables."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from dnndist import models, spectral
from dnndist.settings import ModelSettings

PAPER = ModelSettings(
    name="paper_cnn", depth=3, width=16, hidden=512, norm="none", activation="relu", negative_slope=0.3
)
# dnndist key -> WeightWatcher column, compared to 1e-6 relative on every layer WeightWatcher fits
WW_COLUMNS = {
    "alpha": "alpha",
    "alpha_xmin": "xmin",
    "alpha_ks_distance": "D",
    "alpha_sigma": "sigma",
    "num_pl_spikes": "num_pl_spikes",
    "lambda_max": "lambda_max",
    "stable_rank": "stable_rank",
    "log_norm": "log_norm",
    "log_spectral_norm": "log_spectral_norm",
    "alpha_weighted": "alpha_weighted",
    "log_alpha_norm": "log_alpha_norm",
    "mp_softrank": "mp_softrank",
    "num_evals": "num_evals",
}
NORM_COLUMNS = ("lambda_max", "stable_rank", "log_norm", "log_spectral_norm", "num_evals")  # also where WW's fit fails


def weightwatcher_details(net: nn.Module):
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with warnings.catch_warnings():  # its own pandas deprecations
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=net).analyze(mp_fit=True)


def compare_with_weightwatcher(net: nn.Module, title: str) -> dict[str, dict[str, float]]:
    """Assert dnndist == WeightWatcher on every layer it analyses; print the table; return ours."""
    details = weightwatcher_details(net)
    layers = {name: m for name, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    ours = {name: spectral.spectral_stats(m.weight.detach().numpy()) for name, m in layers.items()}
    analysed = set(details["longname"])
    print(f"\n{title}: dnndist vs WeightWatcher {pytest.importorskip('weightwatcher').__version__}")
    print(
        f"{'layer':8} {'shape':>16} {'alpha':>10} {'ww alpha':>10} {'xmin':>10} {'D':>8} {'lambda_max':>11} {'stable_rank':>11} "
        f"{'mp_softrank':>11} {'max rel diff':>12}"
    )
    for name, m in layers.items():
        s = ours[name]
        shape = "x".join(map(str, m.weight.shape))
        if name not in analysed:  # WeightWatcher skips it (too few eigenvalues): no alpha here either
            assert spectral.ww_skips(int(s["num_evals"]), max(m.weight.shape[:2]))
            assert math.isnan(s["alpha"]) and s["alpha_fitted"] == 0.0
            print(f"{name:8} {shape:>16} {'nan':>10} {'skipped':>10}   ({int(s['num_evals'])} eigenvalues)")
            continue
        row = details[details["longname"] == name].iloc[0]
        fitted = row["alpha"] != -1
        keys = WW_COLUMNS if fitted else NORM_COLUMNS
        rel = {k: abs(s[k] - row[WW_COLUMNS[k]]) / max(abs(row[WW_COLUMNS[k]]), 1e-300) for k in keys}
        print(
            f"{name:8} {shape:>16} {s['alpha']:10.6f} {row['alpha']:10.6f} {s['alpha_xmin']:10.6f} {s['alpha_ks_distance']:8.5f} "
            f"{s['lambda_max']:11.6f} {s['stable_rank']:11.5f} {s['mp_softrank']:11.6f} {max(rel.values()):12.2e}"
        )
        assert max(rel.values()) < 1e-6, (name, rel)
        if fitted:
            assert s["alpha_fitted"] == 1.0 and s["matrix_rank"] == row["matrix_rank"]
        else:  # WeightWatcher's fit failed (alpha = -1): NaN and the flag here
            assert math.isnan(s["alpha"]) and s["alpha_fitted"] == 0.0
    return ours


@pytest.mark.slow
def test_paper_cnn_after_training_equals_weightwatcher():
    torch.manual_seed(0)
    net = models.build(PAPER)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    ours = compare_with_weightwatcher(net, "paper CNN after 5 Adam steps (seed 0)")
    assert all(ours[k]["alpha_fitted"] == 1.0 for k in ("conv1", "conv2", "conv3", "fc1", "fc2"))


def test_heavy_tailed_and_degenerate_layers_equal_weightwatcher():
    """Student-t (2.5 d.o.f.) entries: heavy-tailed ESD; a rank-1 matrix: WeightWatcher's fit fails;
    a 3->4 channel 3x3 conv: 9 kernel positions of 4x3; a 1->2 channel 1x1 conv: 1 eigenvalue, skipped."""
    rng = np.random.default_rng(0)
    net = nn.Sequential()
    net.add_module("student_t", nn.Linear(512, 256))
    net.add_module("rank1", nn.Linear(128, 256))
    net.add_module("conv_few", nn.Conv2d(3, 4, 3))
    net.add_module("conv_tiny", nn.Conv2d(1, 2, 1))
    with torch.no_grad():
        net.student_t.weight.copy_(torch.from_numpy(rng.standard_t(2.5, (256, 512)) / math.sqrt(512)))
        net.rank1.weight.copy_(torch.from_numpy(np.outer(rng.standard_normal(256), rng.standard_normal(128))))
    ours = compare_with_weightwatcher(net, "heavy-tailed and degenerate layers")
    assert 2.0 <= ours["student_t"]["alpha"] <= 6.0  # WeightWatcher's heavy-tailed range
    assert ours["conv_few"]["alpha_fitted"] == 1.0 and ours["conv_few"]["num_evals"] == 27


def test_rank_one_matrix_gets_no_alpha():
    rng = np.random.default_rng(1)
    w = np.outer(rng.standard_normal(512), rng.standard_normal(1024))
    s = spectral.spectral_stats(w)
    assert math.isnan(s["alpha"]) and s["alpha_fitted"] == 0.0
    assert math.isnan(s["alpha_weighted"]) and math.isnan(s["log_alpha_norm"])
    assert s["matrix_rank"] == 1.0 and s["stable_rank"] == pytest.approx(1.0)
    assert s["lambda_max"] == pytest.approx(np.linalg.norm(w, 2) ** 2) and s["num_evals"] == 512


def test_gaussian_matrix_is_not_heavy_tailed():
    """Pure noise (512 x 1024 Gaussian, Marchenko-Pastur ESD): alpha above WeightWatcher's
    heavy-tailed range [2, 6] (it reads > 6 as 'under-trained', i.e. random-like)."""
    w = np.random.default_rng(2).standard_normal((512, 1024)).astype(np.float32) / 32
    s = spectral.spectral_stats(w)
    assert s["alpha_fitted"] == 1.0 and s["alpha"] > spectral.UNDER_TRAINED_ALPHA
    assert s["stable_rank"] == pytest.approx(s["flat_stable_rank"])
    assert s["flat_spectral_norm"] == pytest.approx(math.sqrt(s["lambda_max"]))


def test_power_law_fit_recovers_a_pareto_exponent():
    x = np.random.default_rng(3).pareto(2.0, 4000) + 1.0  # density ~ x^-3
    fit = spectral.fit_power_law(x)
    assert fit.fitted and fit.alpha == pytest.approx(3.0, abs=3 * fit.sigma)
    assert 0 < fit.ks_distance < 0.05 and fit.xmin >= 1.0


def test_conv_weight_is_cut_per_kernel_position():
    w = np.random.default_rng(4).standard_normal((4, 3, 3, 3))  # C_out=4, C_in=3, 3x3
    mats, n, m = spectral.weight_matrices(w)
    assert mats.shape == (9, 4, 3) and (n, m) == (4, 3)
    np.testing.assert_allclose(mats[5], w[:, :, 1, 2] * math.sqrt(0.5))
    pooled = np.sort(
        np.concatenate([np.linalg.svd(w[:, :, i, j], compute_uv=False) ** 2 / 2 for i in range(3) for j in range(3)])
    )
    np.testing.assert_allclose(spectral.esd(mats), pooled, rtol=1e-12)
    s = spectral.spectral_stats(w)
    assert s["num_evals"] == 27 and s["alpha_fitted"] == 1.0
    assert s["flat_spectral_norm"] == pytest.approx(np.linalg.norm(w.reshape(4, -1), 2))
    assert s["flat_stable_rank"] == pytest.approx((w**2).sum() / np.linalg.norm(w.reshape(4, -1), 2) ** 2)


def test_layers_weightwatcher_skips_get_no_alpha_but_norms():
    s = spectral.spectral_stats(np.random.default_rng(5).standard_normal((2, 1, 1, 1)))  # 1 eigenvalue < 8
    assert math.isnan(s["alpha"]) and s["alpha_fitted"] == 0.0 and math.isnan(s["mp_softrank"])
    assert s["num_evals"] == 1 and s["lambda_max"] > 0 and s["stable_rank"] == pytest.approx(1.0)
    bad = np.ones((16, 16))
    bad[0, 0] = np.nan
    s = spectral.spectral_stats(bad)
    assert s["alpha_fitted"] == 0.0 and all(
        math.isnan(v) for k, v in s.items() if k not in ("alpha_fitted", "num_evals")
    )
    with pytest.raises(ValueError, match="Linear"):
        spectral.spectral_stats(np.ones(5))


def test_spectral_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, dnndist.spectral; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_huge_weights_keep_a_finite_log_alpha_norm():
    """Weights scaled by 1e30: eigenvalues by 1e60, so evals ** alpha overflowed to inf (with a
    NumPy warning); summed in log space, log_alpha_norm is the unscaled one + 60 alpha, and the
    scale-free alpha stays."""
    import warnings

    w = np.random.default_rng(3).standard_t(3, size=(300, 200))
    base = spectral.spectral_stats(w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = spectral.spectral_stats(w * 1e30)
    assert base["alpha_fitted"] == big["alpha_fitted"] == 1.0
    assert big["alpha"] == pytest.approx(base["alpha"], rel=1e-9)
    assert np.isfinite(big["log_alpha_norm"])
    assert big["log_alpha_norm"] == pytest.approx(base["log_alpha_norm"] + 60 * base["alpha"], rel=1e-9)


def test_alphas_not_to_be_read_are_flagged():
    """An orthogonal matrix (every eigenvalue 1: no tail, the MLE's alpha is any number), a
    10-eigenvalue classifier (fc2 of the paper CNN) and a Gaussian matrix (neither); an all-zero
    weight has lambda_max 0, as WeightWatcher says."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((1024, 512)))
    flat = spectral.spectral_stats(q.T)
    few = spectral.spectral_stats(rng.standard_t(2.5, (10, 512)))
    gauss = spectral.spectral_stats(rng.standard_normal((512, 1024)) / 32)
    if flat["alpha_fitted"] == 1.0:
        assert flat["alpha_flat_esd"] == 1.0
    assert few["alpha_fitted"] == 1.0 and few["alpha_few_evals"] == 1.0 and few["num_evals"] == 10
    assert gauss["alpha_flat_esd"] == 0.0 and gauss["alpha_few_evals"] == 0.0
    zeros = spectral.spectral_stats(np.zeros((10, 512)))
    assert zeros["lambda_max"] == 0.0 and math.isnan(zeros["alpha"]) and math.isnan(zeros["alpha_flat_esd"])


def test_a_nearly_orthogonal_layer_is_fitted_and_flagged():
    """Orthogonal weights after a few tiny steps: the spectrum is not exactly flat, the fit
    succeeds with an absurd exponent, and the flag says so (issue 2/7: alpha 3.8e6 reported bare)."""
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.standard_normal((1024, 512)))
    s = spectral.spectral_stats(q.T + 1e-4 * rng.standard_normal((512, 1024)))
    assert s["alpha_fitted"] == 1.0 and s["alpha"] > 50 and s["alpha_flat_esd"] == 1.0

"""dnndist power: the simulated power of each claim's rule, against the t-test's exact power."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
import scipy.stats

from dnndist import power

from .conftest import REPO, cli_run


@pytest.mark.parametrize("n", [5, 10])
def test_a_single_directional_comparison_has_the_noncentral_t_power(n):
    """One comparison, effect 1 seed-SD: "holds" needs the one-sided test at 2.5 %, so its power is
    P(T > t_0.975) for T ~ noncentral t(n - 1, sqrt(n)); "does not hold" in the mirrored world
    is the same number (Holm over one comparison is the plain test)."""
    rule = power.Rule("C", "directional", 1)
    p_hold, p_fail = power.simulate(rule, n, effect=1.0, experiments=20000)
    exact = float(scipy.stats.nct.sf(scipy.stats.t.ppf(0.975, n - 1), n - 1, math.sqrt(n)))
    se = math.sqrt(exact * (1 - exact) / 20000)
    assert abs(p_hold - exact) < 4 * se and abs(p_fail - exact) < 4 * se


def test_a_trend_family_cannot_refute_below_its_seeds_and_can_above():
    rule = power.Rule("C5b", "trend", 5)  # 5 random inits: Holm needs 8 seeds
    assert power.simulate(rule, 7, experiments=500)[1] == 0.0
    assert power.simulate(rule, 10, experiments=500)[1] > 0.5
    assert power.seeds_needed(rule, experiments=500) >= 8


def test_the_claim_rows_of_the_paper_experiment():
    rules = {
        r.claim: r
        for r in power.claim_rules(
            ["orthogonal", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "ones", "zeros"],
            ["conv1", "conv2", "conv3", "fc1"],
            ["conv1", "conv2", "conv3"],
            ["conv1", "conv2", "conv3", "fc1"],
        )
    }
    assert rules["C2"].comparisons == 4 * 2 * 4 and rules["C1a"].comparisons == 4 and rules["C1c"].comparisons == 5
    assert (
        rules["C4b"].comparisons == 5 * 4 * 2 and rules["C5b pre"].family == "trend" and rules["C6"].comparisons == 15
    )


@pytest.mark.slow
def test_power_cli_prints_one_row_per_claim(capsys):
    """The CPU reproduction's 6 seeds: the CSV has the stated columns and a row per claim; C5b
    (5 random inits: Holm needs 8 seeds) has no power at all, C1b (one comparison) has."""
    capsys.readouterr()
    config = [REPO / "config.yaml", REPO / "presets" / "reproduction-cpu.yaml"]
    rc, err = cli_run("power", "--config", *config, "--csv", "--experiments", "300")
    assert rc == 0, err
    table = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("claim")
    assert list(table.reset_index().columns) == power.COLUMNS and (table["n_seeds"] == 6).all()
    assert {"C1a", "C1b", "C1c", "C2", "C4a", "C4b", "C5b pre", "C6"} <= set(table.index)
    assert table.loc["C5b pre", "power_does_not_hold"] == 0 and table.loc["C5b pre", "seeds_needed"] == 8
    assert table.loc["C1b", "power_holds"] >= 0.8 and table.loc["C1b", "power_does_not_hold"] >= 0.8

"""How many seeds does a claim need? The power of every claim row's rule, by simulation.

For each row of the claims table (``dnndist.tables.claims``) a config would produce, the rule's
family (directional t-test, interval/TOST, sign-flip trend), its number of comparisons and the
config's seeds are known before anything is trained. ``power`` simulates that rule on normal
per-seed values in units of the seed-to-seed SD:

- a world where the claim is true by ``effect`` SDs: every comparison ``effect`` SDs on the claimed
  side of 0 (directional, trend), or ``effect`` SDs inside the nearest edge of its band (interval);
- a world where it is false by ``effect`` SDs in one comparison: that one ``effect`` SDs on the
  wrong side (or outside its band), the others as in the true world -- the hardest false world
  for a rule that needs all comparisons for "holds" and one for "does not hold".

``power_holds`` is the share of true-world experiments that read "holds", ``power_does_not_hold``
the share of false-world ones that read "does not hold"; ``seeds_needed`` the fewest seeds with
both at least ``target`` (0.8). The comparisons are independent here; correlated comparisons
(several layers of one run) make "holds" easier and Holm's refutation no harder, so these are
conservative for "holds". The same functions decide the real table (dnndist.verdicts), so a rule
that cannot reach an outcome at n seeds shows a power of 0 here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dnndist import verdicts
from dnndist.conventions import CONSTANT_INITS, ONES, ORTHOGONAL, ZEROS, ordering_pairs, uniform_paper_inits

EFFECT = 2.0  # seed-SDs: the default distance of a true (false) world from the claim's boundary
TARGET = 0.8
EXPERIMENTS = 2000
MAX_SEEDS = 200
COLUMNS = ["claim", "n_seeds", "power_holds", "power_does_not_hold", "seeds_needed"]


@dataclass(frozen=True)
class Rule:
    """One claims-table row as the power simulation needs it."""

    claim: str
    family: str  # directional | interval | trend
    comparisons: int


def claim_rules(
    inits: Sequence[str],
    layers: Sequence[str],
    conv_layers: Sequence[str],
    post_layers: Sequence[str],
    feature_layers: Sequence[str] | None = None,
) -> list[Rule]:
    """The claims table's rows for an experiment (as ``tables.claims`` forms them): ``inits`` of the
    config, the weight ``layers`` (every conv and linear layer: the weights table has them all),
    the analysed ``conv_layers`` (emission), the analysed layers with a post-activation feature,
    and the analysed ``feature_layers`` (default: ``layers``)."""
    feature_layers = list(layers if feature_layers is None else feature_layers)
    present = set(inits)
    random_inits = sorted(present - set(CONSTANT_INITS))
    r, n_layers = len(random_inits), len(layers)
    pairs = sum(a in present and b in present for a, b in ordering_pairs())
    rules = [Rule(c, "directional", pairs) for c in ("C1a", "C1a final", "C1a test")]  # (their margin: not simulated)
    if ZEROS in present:
        rules.append(Rule("C1b", "interval", 1))
    if ONES in present:
        rules.append(Rule("C1c", "directional", r))
    if ORTHOGONAL in random_inits and r >= 2:
        rules.append(Rule("C2", "directional", n_layers * 2 * (r - 1)))
    for init in uniform_paper_inits():
        if init in present:
            rules.append(Rule(f"C3 {init}", "interval", 2 * n_layers))
    rules.append(Rule("C4a", "interval", r * n_layers * 2))
    rules.append(Rule("C4b", "interval", r * n_layers * 2))
    for kind, feats in (("pre", feature_layers), ("post", post_layers)):
        rules.append(Rule(f"C5a {kind}", "directional", r * len(feats)))
        if sum(f in set(conv_layers) for f in feats) >= 3:  # the trend runs over the conv layers
            rules.append(Rule(f"C5b {kind}", "trend", r))
    rules += [Rule("C5c", "interval", r * len(feature_layers)), Rule("C5d", "interval", r * len(feature_layers))]
    rules += [Rule("C6", "directional", r * len(conv_layers)), Rule("C6b", "directional", r * len(conv_layers))]
    return [x for x in rules if x.comparisons > 0]


def _decide(rule: Rule, x: np.ndarray, effect: float) -> np.ndarray:
    """The rule's outcomes for experiments x (experiments, comparisons, seeds) in SD units, the
    claimed side positive; an interval rule's band is (-2 effect, 0): the true world sits at its
    centre, ``effect`` SDs from either edge (C3's one-sided KS band is simulated two-sided)."""
    if rule.family == "interval":
        return verdicts.interval(x, -2.0 * effect, 0.0).outcome
    return verdicts.directional(x, +1, test="sign" if rule.family == "trend" else "t").outcome


def simulate(
    rule: Rule, n_seeds: int, effect: float = EFFECT, experiments: int = EXPERIMENTS, seed: int = 0
) -> tuple[float, float]:
    """(power_holds, power_does_not_hold) of ``rule`` at ``n_seeds`` seeds."""
    if n_seeds < 2:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((2, experiments, rule.comparisons, n_seeds))
    if rule.family == "interval":  # true: effect SDs inside the upper edge (0); false: one effect SDs above it
        true_mean, false_mean = -effect, +effect
    else:
        true_mean, false_mean = +effect, -effect
    true_world = noise[0] + true_mean
    false_world = noise[1] + true_mean
    false_world[:, 0, :] += false_mean - true_mean
    holds = _decide(rule, true_world, effect) == verdicts.HOLDS
    fails = _decide(rule, false_world, effect) == verdicts.FAILS
    return float(np.mean(holds)), float(np.mean(fails))


def seeds_needed(rule: Rule, effect: float = EFFECT, target: float = TARGET, experiments: int = EXPERIMENTS) -> int:
    """The fewest seeds with both powers >= target (doubling, then bisection: power grows with n);
    -1 if not reached by MAX_SEEDS."""

    def ok(n: int) -> bool:
        return min(simulate(rule, n, effect, experiments)) >= target

    hi = 4
    while not ok(hi):
        if hi >= MAX_SEEDS:
            return -1
        hi = min(2 * hi, MAX_SEEDS)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def power_table(
    rules: Sequence[Rule], n_seeds: int, effect: float = EFFECT, experiments: int = EXPERIMENTS
) -> pd.DataFrame:
    """One row per claim: its seeds, both powers at those seeds, and the seeds it needs."""
    rows = []
    for rule in rules:
        p_hold, p_fail = simulate(rule, n_seeds, effect, experiments)
        rows.append(
            {
                "claim": rule.claim,
                "n_seeds": n_seeds,
                "power_holds": round(p_hold, 3),
                "power_does_not_hold": round(p_fail, 3),
                "seeds_needed": seeds_needed(rule, effect, TARGET, experiments),
                "comparisons": rule.comparisons,
                "rule": rule.family,
            }
        )
    return pd.DataFrame(rows)

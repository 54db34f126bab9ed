"""yfpo.eval.power (scripts/power_plan.py's model): exact McNemar power against brute force, the fast sign-flip p against
yfpo.eval.stats, and the simulated power against the analytic one where they must agree."""

import itertools
import math

import numpy as np
import pytest

from yfpo.eval import power as pp
from yfpo.eval.stats import mcnemar_exact, sign_flip_exact


def brute_force_power(n: int, p01: float, p10: float, alpha: float = 0.05) -> float:
    """Enumerate every outcome of n items (00, 01, 10, 11 each) and run the project's McNemar test on it."""
    cells = {(0, 1): p01, (1, 0): p10, (1, 1): 0.0, (0, 0): 1 - p01 - p10}
    total = 0.0
    for outcome in itertools.product([(0, 1), (1, 0), (0, 0)], repeat=n):
        prob = math.prod(cells[c] for c in outcome)
        a = [bool(c[0]) for c in outcome]
        b = [bool(c[1]) for c in outcome]
        if mcnemar_exact(a, b)["p"] <= alpha:
            total += prob
    return total


@pytest.mark.parametrize(
    "n,p01,p10,alpha",
    [(6, 0.5, 0.05, 0.05), (7, 0.4, 0.1, 0.05), (8, 0.6, 0.0, 0.05), (7, 0.3, 0.3, 0.2), (8, 0.35, 0.15, 0.1)],
)
def test_mcnemar_power_matches_brute_force(n, p01, p10, alpha):
    assert pp.mcnemar_power(n, p01, p10, alpha) == pytest.approx(brute_force_power(n, p01, p10, alpha), abs=1e-12)


def test_mcnemar_power_is_alpha_or_less_under_h0_and_grows_with_n_and_d():
    assert pp.mcnemar_power(200, 0.05, 0.05) <= 0.05
    assert pp.mcnemar_power(100, 0.10, 0.02) < pp.mcnemar_power(300, 0.10, 0.02)
    assert pp.mcnemar_power(200, 0.06, 0.02) < pp.mcnemar_power(200, 0.10, 0.02)
    assert pp.mcnemar_power(0, 0.1, 0.1) == 0.0


def test_fast_signflip_p_equals_the_reports_test():
    rng = np.random.default_rng(3)
    for _ in range(200):
        s = int(rng.integers(1, 6))
        signed = rng.integers(-s, s + 1, size=int(rng.integers(1, 40))) * (rng.random(1) < 0.9)
        ref = sign_flip_exact([x / s for x in signed], denominator=s)["p"]
        assert pp.signflip_p(np.asarray(signed)) == pytest.approx(ref, abs=1e-12)


def test_simulated_power_with_one_seed_agrees_with_the_analytic_mcnemar():
    n, p_a, d = 150, 0.06, 0.06
    exact = pp.mcnemar_power(n, *pp.cells(p_a, d, 0.2))
    sim = pp.signflip_power(n, 1, p_a, d, churn=0.2, rho=0.5, reps=2000, seed=1)
    assert abs(sim - exact) < 4 * math.sqrt(exact * (1 - exact) / 2000)


def test_seeds_help_unless_items_behave_the_same_under_every_seed():
    n, p_a, d = 100, 0.06, 0.04
    one = pp.power(n, 1, p_a, d)
    three_indep = pp.signflip_power(n, 3, p_a, d, rho=0.0, reps=600, seed=2)
    three_copied = pp.signflip_power(n, 3, p_a, d, rho=1.0, reps=600, seed=2)
    assert three_indep > one + 0.1
    assert abs(three_copied - one) < 0.08  # rho = 1: three copies carry one seed's information


def test_mde_is_the_smallest_d_reaching_the_target_power():
    m = pp.mde(200, 1, 0.06, churn=0.2)
    assert pp.mcnemar_power(200, *pp.cells(0.06, m, 0.2)) >= 0.8
    assert pp.mcnemar_power(200, *pp.cells(0.06, m - 0.005, 0.2)) < 0.8
    assert pp.mde(400, 1, 0.06, churn=0.2) < m
    assert pp.mde(3, 1, 0.5, churn=0.5) is None  # three items can never reach p <= 0.05


def test_cells_reject_an_impossible_table():
    with pytest.raises(ValueError, match="not a valid 2x2 table"):
        pp.cells(0.5, 0.6, 0.0)
    with pytest.raises(ValueError, match="churn"):
        pp.cells(0.5, 0.1, 1.5)

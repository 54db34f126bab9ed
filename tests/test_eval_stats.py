"""yfpo.eval.stats against known values (hand-computed, or scipy computed independently)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yfpo.eval.stats import (
    accuracy,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap,
    paired_diff_ci,
    sign_flip_exact,
    wilson_ci,
)


@pytest.mark.parametrize(
    "k,n,lo,hi",
    [
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),  # z^2/(n+z^2)
        (10, 10, 0.7225, 1.0),
        (0, 1, 0.0, 0.7935),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_known_values(k, n, lo, hi):
    a, b = wilson_ci(k, n)
    assert a == pytest.approx(lo, abs=1e-4)
    assert b == pytest.approx(hi, abs=1e-4)


def test_wilson_matches_scipy_and_edge_cases():
    from scipy.stats import binomtest

    for k, n in [(1, 3), (7, 50), (49, 50), (500, 1319), (0, 1319)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        a, b = wilson_ci(k, n)
        assert a == pytest.approx(ci.low, abs=1e-9) and b == pytest.approx(ci.high, abs=1e-9)
    assert wilson_ci(0, 0) == (0.0, 0.0)
    assert wilson_ci(3, 3)[1] == 1.0 and wilson_ci(0, 3)[0] == 0.0


def test_accuracy():
    r = accuracy([True, False, True, True, False, True, False, False, True, False])
    assert r["acc"] == 0.5 and r["n_correct"] == 5 and r["n"] == 10
    assert (r["lo"], r["hi"]) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert accuracy([])["n"] == 0


def _binom_two_sided(b01: int, b10: int) -> float:
    """Exact two-sided McNemar p for a symmetric binomial: 2 * P(X <= min) capped at 1."""
    n = b01 + b10
    tail = sum(math.comb(n, i) for i in range(min(b01, b10) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(
    "b01,b10,p",
    [(0, 4, 0.125), (4, 0, 0.125), (1, 9, 0.021484375), (3, 3, 1.0), (0, 1, 1.0), (2, 10, None), (15, 30, None)],
)
def test_mcnemar_exact_known(b01, b10, p):
    # A wrong & B right b01 times, A right & B wrong b10 times, plus concordant pairs (which must not matter)
    a = [False] * b01 + [True] * b10 + [True] * 7 + [False] * 5
    b = [True] * b01 + [False] * b10 + [True] * 7 + [False] * 5
    r = mcnemar_exact(a, b)
    assert (r["b01"], r["b10"], r["n_discordant"]) == (b01, b10, b01 + b10)
    expected = p if p is not None else _binom_two_sided(b01, b10)
    assert r["p"] == pytest.approx(expected, rel=1e-12)
    from scipy.stats import binomtest

    assert r["p"] == pytest.approx(binomtest(b01, b01 + b10, 0.5).pvalue, rel=1e-12)


def test_mcnemar_no_discordant_and_length_mismatch():
    assert mcnemar_exact([True, False], [True, False])["p"] == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def _paired_flags(n: int, seed: int, flip: float):
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < 0.5).astype(float)
    b = a.copy()
    wrong = np.flatnonzero(a == 0)
    b[wrong[: int(flip * n)]] = 1.0  # B fixes some of A's errors: a known paired difference
    return a, b


def test_paired_bootstrap_contains_true_difference_and_is_seeded():
    a, b = _paired_flags(400, 0, 0.1)
    true = float(b.mean() - a.mean())
    assert true == pytest.approx(0.1)
    r = paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert r["diff"] == pytest.approx(true)
    assert r["lo"] < true < r["hi"]
    assert r["lo"] > 0  # the effect is clear at n=400
    assert r["p"] < 0.01
    assert paired_bootstrap(a, b, n_boot=4000, seed=1) == r
    # sign: mean(b) - mean(a)
    assert paired_bootstrap(b, a, n_boot=4000, seed=1)["diff"] == pytest.approx(-true)


def test_paired_bootstrap_width_shrinks_with_n():
    widths = []
    for n in (100, 400, 1600):
        a, b = _paired_flags(n, 2, 0.05)
        r = paired_bootstrap(a, b, n_boot=4000, seed=0)
        widths.append(r["hi"] - r["lo"])
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.35)  # ~ 1/sqrt(n)


def test_paired_bootstrap_edge_cases():
    same = paired_bootstrap([1, 0, 1, 1], [1, 0, 1, 1])
    assert (same["diff"], same["lo"], same["hi"], same["p"]) == (0.0, 0.0, 0.0, 1.0)
    assert paired_bootstrap([], [])["n"] == 0
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])


def test_mean_ci_student_t():
    r = mean_ci([1, 2, 3, 4, 5])
    # sd = sqrt(2.5), t(0.975, 4) = 2.7764451
    half = 2.7764451052 * math.sqrt(2.5) / math.sqrt(5)
    assert r["mean"] == 3.0 and r["n"] == 5 and r["sd"] == pytest.approx(math.sqrt(2.5))
    assert (r["lo"], r["hi"]) == pytest.approx((3 - half, 3 + half), abs=1e-8)
    assert (r["lo"], r["hi"]) == pytest.approx((1.0368, 4.9632), abs=1e-4)
    r2 = mean_ci([0.4, 0.5])  # t(0.975, 1) = 12.7062
    assert r2["hi"] - r2["mean"] == pytest.approx(12.7062047 * 0.0707106781 / math.sqrt(2), rel=1e-6)
    r90 = mean_ci([1, 2, 3, 4, 5], conf=0.90)
    assert r90["hi"] - r90["mean"] == pytest.approx(2.1318468 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    one = mean_ci([0.7])
    assert (one["lo"], one["mean"], one["hi"], one["n"]) == (0.7, 0.7, 0.7, 1)
    assert math.isnan(mean_ci([])["mean"])


def test_sign_flip_exact_equals_mcnemar_with_one_seed():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a, b = rng.random(25) < 0.4, rng.random(25) < 0.55
        assert sign_flip_exact((a.astype(int) - b.astype(int)).tolist())["p"] == pytest.approx(mcnemar_exact(a, b)["p"])


def test_sign_flip_exact_against_enumeration():
    import itertools

    diffs = [0.5, 1.0, -0.5, 0.5, 0.0, 1.0, 0.5]  # per-item mean differences over 2 seeds
    t = abs(sum(diffs))
    nz = [abs(d) for d in diffs if d]
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, nz))) >= t - 1e-12 for signs in itertools.product([1, -1], repeat=len(nz))
    )
    r = sign_flip_exact(diffs, denominator=2)
    assert r["p"] == pytest.approx(hits / 2 ** len(nz)) and r["n_nonzero"] == 6 and r["t"] == pytest.approx(3.0)
    assert sign_flip_exact([0, 0], 2)["p"] == 1.0
    with pytest.raises(ValueError, match="multiples of 1/2"):
        sign_flip_exact([1 / 3], denominator=2)


def _table(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[int], list[int]]:
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return a, b


def test_paired_diff_ci_known_value():
    # Newcombe's square-and-add interval for the paired 2x2 table [[59, 6], [16, 80]] (Cavo et al. 2012, in
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 8): -0.0621 (-0.1186, -0.0046)
    # for p(row) - p(column); here a = the column variable, b = the row one, so b - a is that difference
    b, a = _table(59, 6, 16, 80)
    r = paired_diff_ci(a, b)
    assert r["diff"] == pytest.approx(-0.0621, abs=1e-4)
    assert (r["lo"], r["hi"]) == pytest.approx((-0.1186, -0.0046), abs=1e-4)
    # swapping the two runs mirrors the interval
    m = paired_diff_ci(b, a)
    assert (m["lo"], m["hi"]) == pytest.approx((-r["hi"], -r["lo"]))


@pytest.mark.parametrize("n", [1, 3, 4, 10, 50])
def test_paired_diff_ci_zero_discordant_is_never_zero_width(n):
    """0 discordant items among n: the interval holds 0 and has a width that shrinks with n but never vanishes
    (a bootstrap over items gives [0, 0] here, which reads as certainty)."""
    widths = []
    for a, b in (_table(n, 0, 0, 0), _table(0, 0, 0, n), _table(n // 2, 0, 0, n - n // 2)):
        r = paired_diff_ci(a, b)
        assert r["diff"] == 0.0 and r["lo"] < 0.0 < r["hi"]
        widths.append(r["hi"] - r["lo"])
        assert paired_bootstrap(a, b)["hi"] - paired_bootstrap(a, b)["lo"] == 0.0  # the fault it replaces
    # all right (or all wrong) at n items: the half-width is Wilson's distance from n/n
    assert widths[0] / 2 == pytest.approx(1 - wilson_ci(n, n)[0])
    if n >= 4:
        assert widths[0] > paired_diff_ci(*_table(4 * n, 0, 0, 0))["hi"] * 2


def test_paired_diff_ci_covers_at_small_counts():
    """Coverage of the true paired difference over simulated small experiments (seeded) is near 95%, where the
    percentile bootstrap's falls short."""
    rng = np.random.default_rng(0)
    for n, pa, pb in ((10, 0.1, 0.1), (20, 0.05, 0.15), (30, 0.5, 0.6)):
        hit_n = hit_b = 0
        for _ in range(300):
            u = rng.random(n)
            a, b = (u < pa).astype(int), (u < pb).astype(int)  # correlated pairs: b right wherever a is
            r = paired_diff_ci(a, b)
            bs = paired_bootstrap(a, b, n_boot=300, seed=1)
            hit_n += r["lo"] <= pb - pa <= r["hi"]
            hit_b += bs["lo"] <= pb - pa <= bs["hi"]
        assert hit_n / 300 >= 0.93, (n, pa, pb, hit_n)
        assert hit_n >= hit_b


def test_paired_diff_ci_rates():
    """Per-item success rates (avg@n, seed means) fill the table with expected counts; 0/1 rates give the flag
    table's interval; a length mismatch or no items is handled."""
    a, b = _table(3, 1, 4, 2)
    assert paired_diff_ci([float(x) for x in a], [float(x) for x in b]) == paired_diff_ci(a, b)
    r = paired_diff_ci([0.5, 0.5, 1.0, 0.0], [0.5, 1.0, 1.0, 0.0])
    assert r["diff"] == pytest.approx(0.125) and r["lo"] < 0.125 < r["hi"]
    assert paired_diff_ci([], [])["n"] == 0
    with pytest.raises(ValueError, match="pair them"):
        paired_diff_ci([1, 0], [1])

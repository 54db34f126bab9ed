"""Power of the report's paired accuracy tests, and the smallest difference a design can detect (MDE).

The outcome model (scripts/power_plan.py, docs/results/power_plan.md): per (item, seed) row the pair (A correct,
B correct) has P(A right, B wrong) = p10 = churn * p_A and P(A wrong, B right) = p01 = p10 + d (acc_B = p_A + d);
with probability rho an item behaves the same under every seed. One seed: McNemar's exact test, power computed
exactly; several: the exact sign-flip test on each item's summed difference, power simulated (common random
numbers, so the bisection is monotone). Tests as in yfpo.eval.stats.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

ALPHA = 0.05
POWER = 0.8
# churn measured on docs/results/cpu_result (6 of 29 of the weaker model's correct rows lost by the stronger)
CHURN = 6 / 29
RHO = 0.5  # assumed (not measured on this model)


# ----------------------------------------------------------------------------- exact McNemar
@lru_cache(maxsize=None)
def _binom_pmf_half(k: int) -> tuple[float, ...]:
    return tuple(math.comb(k, b) * 0.5**k for b in range(k + 1))


@lru_cache(maxsize=None)
def mcnemar_rejects(k: int, alpha: float = ALPHA) -> tuple[bool, ...]:
    """For k discordant items, which counts b of B-only items the exact two-sided binomial test rejects at
    alpha (scipy's binomtest two-sided p, as yfpo.eval.stats.mcnemar_exact uses: sum of the outcomes no more
    likely than the observed one)."""
    pmf = _binom_pmf_half(k)
    out = []
    for b in range(k + 1):
        p = sum(q for q in pmf if q <= pmf[b] * (1 + 1e-7))
        out.append(min(1.0, p) <= alpha)
    return tuple(out)


def mcnemar_power(n: int, p01: float, p10: float, alpha: float = ALPHA) -> float:
    """Exact power of McNemar's exact test on n independent pairs with P(A wrong, B right) = p01 and
    P(A right, B wrong) = p10: sum over discordant counts k ~ Bin(n, p01 + p10) and b ~ Bin(k, p01/(p01+p10))."""
    if p01 < 0 or p10 < 0 or p01 + p10 > 1:
        raise ValueError(f"mcnemar_power: p01={p01}, p10={p10} are not cell probabilities")
    q = p01 + p10
    if q == 0:
        return 0.0
    r = p01 / q
    total = 0.0
    for k in range(n + 1):
        pk = math.comb(n, k) * q**k * (1 - q) ** (n - k)
        if pk < 1e-15:
            continue
        rej = mcnemar_rejects(k, alpha)
        total += pk * sum(math.comb(k, b) * r**b * (1 - r) ** (k - b) for b in range(k + 1) if rej[b])
    return total


def cells(p_a: float, d: float, churn: float) -> tuple[float, float]:
    """(p01, p10) of the row model: p10 = churn * p_a, p01 = p10 + d."""
    if not (0 <= churn <= 1 and 0 <= p_a <= 1):
        raise ValueError(f"cells: churn={churn} and p_a={p_a} must be in [0, 1]")
    p10 = churn * p_a
    p01 = p10 + d
    if p01 < -1e-12 or p01 > 1 - p_a + 1e-12:  # P(A wrong) = p01 + p00 = 1 - p_a
        raise ValueError(f"cells: d={d} with p_a={p_a}, churn={churn} is not a valid 2x2 table")
    return p01, p10


# ----------------------------------------------------------------------------- exact sign-flip, simulated power
@lru_cache(maxsize=200000)
def _signflip_null(counts: tuple[int, ...]) -> np.ndarray:
    """Null distribution of sum_i s_i v_i (s_i = +-1 fair) for counts[v-1] items with |D| = v, index = sum + total."""
    dist = np.ones(1)
    for v, c in enumerate(counts, start=1):
        if c == 0:
            continue
        part = np.zeros(2 * v * c + 1)
        for j in range(c + 1):  # j items positive: sum = v * (2j - c)
            part[v * (2 * j - c) + v * c] = math.comb(c, j) * 0.5**c
        dist = np.convolve(dist, part)
    return dist


def signflip_p(signed: np.ndarray) -> float:
    """Exact two-sided sign-flip p of integer per-item differences (same as yfpo.eval.stats.sign_flip_exact)."""
    nz = signed[signed != 0]
    if len(nz) == 0:
        return 1.0
    a = np.abs(nz)
    counts = tuple(int(x) for x in np.bincount(a, minlength=int(a.max()) + 1)[1:])
    dist = _signflip_null(counts)
    total = (len(dist) - 1) // 2
    t = abs(int(nz.sum()))
    sums = np.arange(-total, total + 1)
    return float(min(1.0, dist[np.abs(sums) >= t].sum()))


def simulate_diffs(
    n: int, seeds: int, p_a: float, d: float, churn: float, rho: float, u: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Per-item sum over seeds of (B correct - A correct), for `reps` simulated experiments.

    u: uniforms (reps, n, seeds) drawing each row's cell; w: uniforms (reps, n) choosing whether an item
    behaves the same under every seed (w < rho: seed 0's row is copied)."""
    p01, p10 = cells(p_a, d, churn)
    cell = np.where(u < p01, 1, np.where(u < p01 + p10, -1, 0))  # B-only +1, A-only -1, concordant 0
    same = (w < rho)[..., None]
    cell = np.where(same, cell[..., :1], cell)
    return cell.sum(axis=2)


def signflip_power(
    n: int,
    seeds: int,
    p_a: float,
    d: float,
    churn: float = CHURN,
    rho: float = RHO,
    reps: int = 400,
    seed: int = 0,
    alpha: float = ALPHA,
) -> float:
    """Simulated power of the exact sign-flip test (common random numbers: the same `seed` gives the same draws)."""
    rng = np.random.default_rng(seed)
    u = rng.random((reps, n, seeds))
    w = rng.random((reps, n))
    diffs = simulate_diffs(n, seeds, p_a, d, churn, rho, u, w)
    return float(np.mean([signflip_p(row) <= alpha for row in diffs]))


def power(n: int, seeds: int, p_a: float, d: float, churn: float = CHURN, rho: float = RHO, reps: int = 400) -> float:
    if seeds == 1 or rho >= 1:
        # rho = 1: the S rows of an item are copies; the item sum is S x one McNemar row, same test decisions
        return mcnemar_power(n, *cells(p_a, d, churn))
    return signflip_power(n, seeds, p_a, d, churn, rho, reps)


def mde(
    n: int,
    seeds: int,
    p_a: float,
    churn: float = CHURN,
    rho: float = RHO,
    reps: int = 400,
    target: float = POWER,
    tol: float = 0.0025,
) -> float | None:
    """Smallest improvement d (absolute accuracy) with power >= target, by bisection to `tol`;
    None when even the largest possible d (B right on every row A misses) falls short."""
    hi = 1 - p_a - churn * p_a  # p01 = churn * p_a + d <= 1 - p_a
    if power(n, seeds, p_a, hi, churn, rho, reps) < target:
        return None
    lo = 0.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if power(n, seeds, p_a, mid, churn, rho, reps) >= target:
            hi = mid
        else:
            lo = mid
    return hi

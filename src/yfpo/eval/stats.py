"""Statistics for evaluation results. Pure functions: lists/numbers in, numbers out."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def wilson_ci(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95% interval for k successes out of n (0, 0 when n == 0)."""
    if n <= 0:
        return 0.0, 0.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k <= 0 else max(0.0, centre - half)  # exact bounds at 0/n and n/n (no 5e-17 rounding)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return lo, hi


def accuracy(flags: Sequence[bool]) -> dict:
    k, n = int(sum(bool(f) for f in flags)), len(flags)
    lo, hi = wilson_ci(k, n)
    return {"acc": k / n if n else 0.0, "lo": lo, "hi": hi, "n_correct": k, "n": n}


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact (binomial) McNemar test on paired correctness flags.

    b01 = items A got wrong and B right, b10 = A right and B wrong; p = two-sided binomial test of
    b01 vs b10 at 1/2 (1.0 when there are no discordant pairs).
    """
    if len(a) != len(b):
        raise ValueError(f"mcnemar_exact: {len(a)} vs {len(b)} items; pair them by id first")
    b10 = sum(1 for x, y in zip(a, b) if x and not y)
    b01 = sum(1 for x, y in zip(a, b) if y and not x)
    n = b10 + b01
    if n == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        p = float(binomtest(b01, n, 0.5, alternative="two-sided").pvalue)
    return {"b01": b01, "b10": b10, "n_discordant": n, "p": p}


def sign_flip_exact(diffs: Sequence[float], denominator: int = 1) -> dict:
    """Exact two-sided sign-flip (permutation) test that paired differences are symmetric about 0.

    `diffs` are per-item differences that are multiples of 1/denominator (e.g. the mean over S seeds of
    correct_A - correct_B, denominator S). Under H0 each item's difference is as likely negative as
    positive; the statistic is their sum and p = P(|T| >= |t_obs|), computed exactly by convolution.
    With denominator 1 (one seed: differences -1/0/+1) this is McNemar's exact test. Items, not
    (seed, item) rows, are the unit, so repeating the same items over seeds does not inflate n.
    """
    signed = [int(round(d * denominator)) for d in diffs]
    if any(abs(x - d * denominator) > 1e-6 for x, d in zip(signed, diffs)):
        raise ValueError(f"sign_flip_exact: differences are not multiples of 1/{denominator}")
    t_obs = abs(sum(signed))
    v = [abs(x) for x in signed if x != 0]
    if not v:
        return {"t": 0.0, "n_nonzero": 0, "p": 1.0}
    total = sum(v)
    dist = np.zeros(2 * total + 1)  # index k <-> sum k - total
    dist[total] = 1.0
    for x in v:  # each nonzero |d| enters as +x or -x with probability 1/2
        dist = 0.5 * (np.roll(dist, x) + np.roll(dist, -x))  # no wrap-around: |sum| <= total
    sums = np.arange(-total, total + 1)
    p = float(dist[np.abs(sums) >= t_obs].sum())
    return {"t": t_obs / denominator, "n_nonzero": len(v), "p": min(1.0, p)}


def paired_diff_ci(a: Sequence[float], b: Sequence[float], z: float = 1.959963984540054) -> dict:
    """Newcombe's hybrid score 95% interval (1998, method 10, with the continuity-corrected correlation used in
    Altman et al., "Statistics with confidence") for mean(b) - mean(a) on paired outcomes.

    Each side's Wilson interval is combined with the estimated correlation of the two proportions, so the
    interval is never zero-width while items are few: with 0 discordant items among n it still spans
    roughly +/- Wilson's distance from n/n (or 0/n), shrinking as n grows, where a bootstrap over items
    collapses to [0, 0]. Outcomes are 0/1 flags, or per-item success rates in [0, 1] (avg@n, a mean over seeds):
    the 2x2 table is then filled with expected counts (sum of x*y, x*(1-y), ...), the same table for 0/1."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_diff_ci: {x.shape} vs {y.shape}; pair them by id first")
    n = len(x)
    if n == 0:
        return {"diff": 0.0, "lo": 0.0, "hi": 0.0, "n": 0, "method": "Newcombe hybrid score"}
    both, a_only, b_only, neither = (
        float(v) for v in ((x * y).sum(), (x * (1 - y)).sum(), ((1 - x) * y).sum(), ((1 - x) * (1 - y)).sum())
    )
    pa, pb = (both + a_only) / n, (both + b_only) / n
    la, ua = wilson_ci(both + a_only, n, z)
    lb, ub = wilson_ci(both + b_only, n, z)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = 0.0
    if margins > 0:
        cross = both * neither - a_only * b_only
        phi = (cross - n / 2 if cross > n / 2 else min(cross, 0.0)) / math.sqrt(margins)
    d = pb - pa
    lo = d - math.sqrt(max(0.0, (pb - lb) ** 2 + (ua - pa) ** 2 - 2 * phi * (pb - lb) * (ua - pa)))
    hi = d + math.sqrt(max(0.0, (ub - pb) ** 2 + (pa - la) ** 2 - 2 * phi * (ub - pb) * (pa - la)))
    return {"diff": d, "lo": max(-1.0, lo), "hi": min(1.0, hi), "n": n, "method": "Newcombe hybrid score"}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0) -> dict:
    """Bootstrap over items of mean(b) - mean(a): the difference, its 95% percentile CI, and the share
    of resamples with the opposite sign (a one-sided bootstrap p, doubled for two-sided)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap: {x.shape} vs {y.shape}; pair them by id first")
    n = len(x)
    if n == 0:
        return {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0, "n": 0}
    d = y - x
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = d[idx].mean(axis=1)
    diff = float(d.mean())
    lo, hi = np.percentile(means, [2.5, 97.5])
    if diff >= 0:
        p = 2 * float(np.mean(means <= 0))
    else:
        p = 2 * float(np.mean(means >= 0))
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "p": min(1.0, p), "n": n}


def mean_ci(values: Sequence[float], conf: float = 0.95) -> dict:
    """Mean and Student-t confidence interval over independent runs (e.g. seeds). n=1 gives a zero-width CI."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "sd": float("nan")}
    m = float(v.mean())
    if n == 1:
        return {"mean": m, "lo": m, "hi": m, "n": 1, "sd": 0.0}
    from scipy.stats import t

    sd = float(v.std(ddof=1))
    half = float(t.ppf(0.5 + conf / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": m, "lo": m - half, "hi": m + half, "n": n, "sd": sd}


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of per-item values (pass@k, success rates, paired differences) with a 95% percentile bootstrap CI
    over items."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(v.mean()), "lo": float(lo), "hi": float(hi), "n": len(v)}

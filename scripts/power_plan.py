"""Power plan for the paired YFPO-vs-DPO comparison (issue 12, item 1).

    python scripts/power_plan.py [--reps 400] [--out docs/results/power_plan.md]

What it computes: for each benchmark slice (n items) and number of seeds S per method, the minimum detectable
difference (MDE) in accuracy, in percentage points, of method B over method A at two-sided alpha 0.05 with
power 0.8, for the test the report uses (yfpo.eval.stats): McNemar's exact test with one seed, and the exact
sign-flip test on each item's mean difference over S seeds with several (items are the unit).

The outcome model (stated, not measured item by item):
- Per (item, seed) row, the pair (A correct, B correct) has the probabilities of a 2x2 table with
  P(A right, B wrong) = p10 = churn * p_A and P(A wrong, B right) = p01 = p10 + d, so that acc_B = p_A + d.
  `churn` = the share of A's correct rows that B gets wrong; measured on docs/results/cpu_result (pooled over
  the 6 comparisons with discordant rows, 6 of 29 = 0.21; see the CHURN_* constants).
- Rows of one item over the S seeds: with probability `rho` the item behaves the same under every seed (one
  draw of the 2x2 table copied S times), otherwise each seed draws independently. rho = 1: seeds add nothing;
  rho = 0: S seeds are worth S times the items. rho is not measured on this model (the cpu_result records that
  would give it are not kept); the table uses rho = 0.5 and the sensitivity table shows 0 and 1.
- With S = 1 this is exactly McNemar's setting: the power is computed analytically (exact binomial sums,
  `mcnemar_power`); with S > 1 by simulation (`signflip_power`, `reps` draws, common random numbers over d so
  the search is monotone).
The budget model uses seconds per generated item and per trained pair measured in existing records (MEASURED).
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

ALPHA = 0.05
POWER = 0.8

# churn measured on docs/results/cpu_result/comparison.json (rows = 60 items x 2 seeds): for each comparison
# with discordant rows, the weaker model's correct rows and how many of them the stronger model got wrong:
# gsm8k base/dpo 4 -> 0, mawps base/dpo 6 -> 2, gsm8k dpo_fdt/dpo 2 -> 0, mawps dpo/dpo_fdt 8 -> 2,
# gsm8k yfpo_fdt/dpo 1 -> 0, mawps dpo/yfpo_fdt 8 -> 2.
CHURN_LOST, CHURN_CORRECT = 6, 29
CHURN = CHURN_LOST / CHURN_CORRECT
RHO = 0.5

# (name, items available, measured base accuracy of the default model or None, where measured)
BENCHES = [
    ("gsm8k", 1319, 0.005, "README baseline: 1/200, 320 new tokens"),
    ("gsm8k", 1319, 0.033, "cpu_result base: 2/60, 192 new tokens"),
    ("gsm8k", 1319, 0.075, "cpu_result DPO (LoRA): 9/120 rows, 192 new tokens"),
    ("mawps_singleop", 562, 0.062, "README baseline: 35/562"),
    ("mawps_addsub", 395, None, "not measured"),
    ("mawps_singleeq", 508, None, "not measured"),
    ("mawps_multiarith", 600, None, "not measured"),
    ("svamp", 1000, None, "not measured"),
    ("asdiv_a", 1218, None, "not measured"),
    ("pair discrimination", 2429, 0.562, "cpu_result base: 36/64 held-out pairs (no generation)"),
]
ASSUMED_P = 0.06  # base accuracy assumed where not measured: the one off-floor measurement (MAWPS SingleOp)

# seconds, measured (docs/results/cpu_result/README.md and benchmarks/RESULTS.md; 2-core AMD EPYC VM, 1 torch
# thread per process, 2 processes side by side, shared):
MEASURED = {
    # each model's evaluation (60 GSM8K + 60 MAWPS SingleOp at 192 new tokens + 64 discrimination pairs) ~6 min
    "eval_s_per_item": 360 / 120,
    # discrimination: teacher-forced, ~2.5 min for 41 pairs x 2 responses with the margin hooks (neuron_margin.py)
    "disc_s_per_pair": 150 / 41,
    # LoRA training, 64 pairs 1 epoch: 520-606 s (incl. the reference pass); full fine-tuning 490-770 s
    "train_s_per_pair_lora": 563 / 64,
    "train_s_per_pair_full": 630 / 64,
    # pairs stage: 112 questions x 4 samples at 128 new tokens in 721 s (default threads, one process)
    "pairs_s_per_question": 721 / 112,
}


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


# ----------------------------------------------------------------------------- budget
def budget_hours(
    methods: int, seeds: int, gen_items: int, disc_pairs: int, train_pairs: int, questions: int, processes: int = 2
) -> dict[str, float]:
    """Wall hours of a design from the MEASURED rates (already per process with 2 side by side), split
    over `processes` parallel processes: pairs once, every (method, seed) trained and evaluated, base once."""
    models = methods * seeds
    pairs = questions * MEASURED["pairs_s_per_question"]
    train = models * train_pairs * MEASURED["train_s_per_pair_lora"]
    ev = (models + 1) * (gen_items * MEASURED["eval_s_per_item"] + disc_pairs * MEASURED["disc_s_per_pair"])
    return {
        "pairs_h": pairs / 3600,
        "train_h": train / 3600 / processes,
        "eval_h": ev / 3600 / processes,
        "total_h": (pairs + (train + ev) / processes) / 3600,
    }


DESIGNS = [  # (label, methods, seeds, generated eval items per model, discrimination pairs, train pairs, questions)
    ("cpu_result (for calibration of the model)", 5, 2, 120, 64, 64, 112),
    ("A: 5 methods x 3 seeds, 400+400 items, 300 disc. pairs", 5, 3, 800, 300, 256, 400),
    ("B: 5 methods x 3 seeds, 200+200+200 items, 300 disc.", 5, 3, 600, 300, 256, 400),
    ("C: 5 methods x 3 seeds, 100+100 items, 400 disc.", 5, 3, 200, 400, 256, 400),
    ("D: 7 methods (+50% data arms) x 3 seeds, 200+200, 400 disc.", 7, 3, 400, 400, 192, 400),
]


def budget_table() -> list[str]:
    lines = [
        "| design | models trained | pairs (h) | train (h) | eval (h) | total wall (h, 2 processes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, m, s, g, dp, tp, q in DESIGNS:
        b = budget_hours(m, s, g, dp, tp, q)
        lines.append(
            f"| {label} | {m * s} | {b['pairs_h']:.1f} | {b['train_h']:.1f} | {b['eval_h']:.1f} | {b['total_h']:.1f} |"
        )
    return lines


def table(reps: int, slices: list[int], seeds_list: list[int]) -> list[str]:
    lines = [
        "| benchmark | items | base acc. p_A | source of p_A | "
        + " | ".join(f"n={n}, S={s}" for n in slices for s in seeds_list)
        + " |",
        "| --- | ---: | ---: | --- | " + " | ".join("---:" for _ in slices for _ in seeds_list) + " |",
    ]
    for name, avail, p, src in BENCHES:
        p_a = ASSUMED_P if p is None else p
        cols = []
        for n in slices:
            for s in seeds_list:
                if n > avail:
                    cols.append("n/a")
                    continue
                m = mde(n, s, p_a, reps=reps)
                cols.append("none" if m is None else f"{100 * m:.1f}")
        pa = f"{100 * p_a:.1f}%" + ("" if p is not None else " (assumed)")
        lines.append(f"| {name} | {avail} | {pa} | {src} | " + " | ".join(cols) + " |")
    return lines


def sensitivity(reps: int, n: int, seeds: int, p_a: float) -> list[str]:
    lines = [
        "| churn \\ rho | " + " | ".join(f"rho={r}" for r in (0.0, 0.5, 1.0)) + " |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in (0.0, CHURN, 0.4):
        row = []
        for r in (0.0, 0.5, 1.0):
            m = mde(n, seeds, p_a, churn=c, rho=r, reps=reps)
            row.append("none" if m is None else f"{100 * m:.1f}")
        lines.append(f"| churn={c:.2f} | " + " | ".join(row) + " |")
    return lines


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=400, help="simulated experiments per power value (S > 1)")
    ap.add_argument("--slices", default="100,200,400", help="item counts per slice, comma-separated")
    ap.add_argument("--seeds", default="1,3,5", help="seeds per method, comma-separated")
    ap.add_argument("--out", help="write the Markdown tables here (default: stdout only)")
    a = ap.parse_args(argv)
    slices = [int(x) for x in a.slices.split(",")]
    seeds_list = [int(x) for x in a.seeds.split(",")]
    out = [
        "## MDE table (percentage points of accuracy, B over A; alpha 0.05 two-sided, power 0.8)",
        "",
        f"churn = {CHURN:.2f} (measured, {CHURN_LOST}/{CHURN_CORRECT}), rho = {RHO} (assumed), "
        f"reps = {a.reps} per simulated power value (S > 1); S = 1 is exact (analytic McNemar).",
        "",
    ]
    out += table(a.reps, slices, seeds_list)
    for name, n, s, p in (("MAWPS-like slice (p_A 6%)", 400, 3, 0.06), ("GSM8K (p_A 3.3%)", 400, 3, 0.033)):
        out += ["", f"### Sensitivity: {name}, n = {n}, S = {s}: MDE (points) by churn and rho", ""]
        out += sensitivity(a.reps, n, s, p)
    out += ["", "## Budget (wall hours from the measured per-item rates, today's HF generation path)", ""]
    out += [", ".join(f"{k} = {v:.2f} s" for k, v in MEASURED.items()), ""]
    out += budget_table()
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

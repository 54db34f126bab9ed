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
import sys
from pathlib import Path

from yfpo.eval.power import (  # the outcome model lives in the package: the report uses it too
    CHURN,
    RHO,
    mde,
)

# churn measured on docs/results/cpu_result/comparison.json (rows = 60 items x 2 seeds): for each comparison
# with discordant rows, the weaker model's correct rows and how many of them the stronger model got wrong:
# gsm8k base/dpo 4 -> 0, mawps base/dpo 6 -> 2, gsm8k dpo_fdt/dpo 2 -> 0, mawps dpo/dpo_fdt 8 -> 2,
# gsm8k yfpo_fdt/dpo 1 -> 0, mawps dpo/yfpo_fdt 8 -> 2.
CHURN_LOST, CHURN_CORRECT = 6, 29
assert CHURN == CHURN_LOST / CHURN_CORRECT  # the package's constant is this measurement

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

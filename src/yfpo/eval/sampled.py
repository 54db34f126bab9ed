"""Sampled metrics: pass@k (unbiased estimator), maj@k (majority vote), avg@n. Pure functions.

Definitions (n samples per item, c of them correct):
  pass@k  1 - C(n-c, k) / C(n, k): the probability that at least one of k samples drawn without
          replacement from the n is correct (Chen et al. 2021, the estimator lighteval uses).
  avg@n   c / n, the mean per-sample accuracy (the item's success rate, used by paired comparisons).
  maj@k   majority vote over the extracted answers of the FIRST k samples (lm-eval-harness'
          self-consistency): samples with no extracted answer do not vote; the winner is graded.
          Tie rule (deterministic): among answers with the same count, the one whose first occurrence
          comes earliest in sample order wins. No vote at all -> incorrect.

Sample seeds: `sample_seed(seed, item_id)` derives one seed per item from the run seed and the item's
id only, so an item's samples do not depend on the chunk layout, the batch it lands in, or on which
items were already done (a resumed run writes exactly the samples an uninterrupted one would).
"""

from __future__ import annotations

from math import comb
from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for c correct out of n samples (k <= n)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def avg_at_n(flags: Sequence[bool]) -> float:
    return sum(bool(f) for f in flags) / len(flags) if flags else 0.0


def majority_answer(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """(winning answer, its index of first occurrence); (None, -1) when no sample has an answer.

    Ties: the answer that first appears earliest wins."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        first.setdefault(a, i)
    if not counts:
        return None, -1
    best = min(counts, key=lambda a: (-counts[a], first[a]))
    return best, first[best]


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int) -> bool:
    """Majority vote over the first k samples; graded by the correctness flag of the winner's first sample."""
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} answers vs {len(correct)} flags")
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k: need 1 <= k <= {len(answers)}, got {k}")
    _, i = majority_answer(answers[:k])
    return bool(correct[i]) if i >= 0 else False


def ks_for(n: int) -> list[int]:
    """The k values reported for n samples: 1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def item_metrics(samples: list[dict], extractors: Sequence[str]) -> dict:
    """Per-item sampled metrics from its samples (each with "extracted" and "correct" per extractor)."""
    n = len(samples)
    out: dict = {"n_samples": n, "success_rate": {}, "pass": {}, "maj": {}}
    for e in extractors:
        flags = [bool(s["correct"][e]) for s in samples]
        answers = [s["extracted"].get(e) for s in samples]
        c = sum(flags)
        out["success_rate"][e] = c / n if n else 0.0
        out["pass"][e] = {str(k): pass_at_k(n, c, k) for k in ks_for(n)}
        out["maj"][e] = {str(k): maj_at_k(answers, flags, k) for k in ks_for(n)}
    return out


def summarize_sampled(rows: list[dict], extractors: Sequence[str]) -> dict:
    """Benchmark-level sampled metrics: mean over items of pass@k, maj@k (with Wilson CI) and avg@n.

    pass@k and avg@n are means of per-item values in [0, 1]; their CI is a percentile bootstrap over items."""
    from yfpo.eval.stats import accuracy, bootstrap_mean_ci

    if not rows:
        return {}
    n = min(r["n_samples"] for r in rows)
    res: dict = {"n_samples": n, "ks": ks_for(n), "by_extractor": {}}
    for e in extractors:
        d: dict = {"avg": bootstrap_mean_ci([r["success_rate"][e] for r in rows]), "pass": {}, "maj": {}}
        for k in ks_for(n):
            d["pass"][str(k)] = bootstrap_mean_ci([r["pass"][e][str(k)] for r in rows])
            d["maj"][str(k)] = accuracy([r["maj"][e][str(k)] for r in rows])
        res["by_extractor"][e] = d
    return res

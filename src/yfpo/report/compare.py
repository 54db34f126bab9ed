"""The numbers (SPEC sections 7-8): accuracy per method x benchmark with its intervals, and paired tests.

Accuracy is the mean over seeds of the primary extractor's accuracy. Its Wilson 95% CI counts each item
once: with several seeds it is the Wilson interval of the seed-mean accuracy over the items of one seed
(pooling (seed, item) rows as independent would make it ~sqrt(seeds) too narrow, since the seeds share
the items); with >= 2 seeds there is also a t-interval over the seed means. Significance is McNemar's exact
test on items paired by id with one seed, and with several seeds its generalisation that keeps the item as
the unit: an exact sign-flip test on each item's mean difference over seeds. The untrained base model is
paired with every seed of the other method."""

from __future__ import annotations

from yfpo.eval.stats import mcnemar_exact, mean_ci, paired_diff_ci, sign_flip_exact, wilson_ci
from yfpo.report.read import RunData

METHOD_LABELS = {
    "base": "base (untrained)",
    "dpo": "DPO",
    "yfpo": "YFPO",
    "dpo_fdt": "DPO+FDT",
    "yfpo_fdt": "YFPO+FDT",
    "yfpo_random": "YFPO (random neurons)",
    "yfpo_flip": "YFPO (flipped signs)",
    "dpo_half": "DPO (50% of pairs)",
    "yfpo_half": "YFPO (50% of pairs)",
}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def wilson(k: float, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion k/n (k may be a mean count over seeds)."""
    return wilson_ci(k, n)


def seed_ci(values: list[float], clip: bool = False) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval over seeds (zero width with one seed); clip=True keeps the interval of an
    accuracy inside [0, 1] (a t-interval of three seeds near 0% otherwise reaches below zero)."""
    r = mean_ci(values)
    if clip:
        return r["mean"], max(0.0, r["lo"]), min(1.0, r["hi"])
    return r["mean"], r["lo"], r["hi"]


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """McNemar's exact test on paired outcomes; a_only = items only a got right, b_only = only b."""
    r = mcnemar_exact(a, b)
    return {"n": len(a), "a_only": r["b10"], "b_only": r["b01"], "p": r["p"]}


def _primary(summary: dict) -> str:
    return summary.get("primary") or "flexible"


def _item_correct(items: list[dict], ext: str) -> dict[str, bool]:
    return {str(it["id"]): bool((it.get("correct") or {}).get(ext, False)) for it in items}


def _by_seed(rd: RunData, method: str, bench: str) -> dict:
    return {s: v for (m, s, b), v in rd.evals.items() if m == method and b == bench}


def _seed_accuracy(v: dict) -> tuple[float, int]:
    """(accuracy, number of items) of one evaluation, from its items or else its summary."""
    ext = _primary(v["summary"])
    corr = _item_correct(v["items"], ext)
    if corr:
        return sum(corr.values()) / len(corr), len(corr)
    return v["summary"]["accuracy"][ext]["acc"], v["summary"]["n"]


def _truncation(v: dict) -> tuple[float, float] | None:
    """(share of outputs cut off at the token limit, accuracy with those outputs counted wrong) of one
    evaluation: the summary's `truncation` when it has one, else counted from the items' `truncated` flags;
    None when neither is recorded (e.g. MMLU, which generates nothing)."""
    ext = _primary(v["summary"])
    tr = v["summary"].get("truncation")
    if isinstance(tr, dict) and "rate" in tr:
        wrong = (tr.get("accuracy_if_truncated_wrong") or {}).get(ext)
        if wrong is not None:
            return float(tr["rate"]), float(wrong)
    items = [it for it in v["items"] if "truncated" in it]
    if not items or len(items) != len(v["items"]):
        return None
    cut = [bool(it["truncated"]) for it in items]
    ok = [bool((it.get("correct") or {}).get(ext, False)) and not c for it, c in zip(items, cut)]
    return sum(cut) / len(cut), sum(ok) / len(ok)


def _cell(runs: dict) -> dict:
    accs, ns, cuts = [], [], []
    for _, v in sorted(runs.items(), key=lambda kv: str(kv[0])):
        acc, n = _seed_accuracy(v)
        accs.append(acc)
        ns.append(n)
        cuts.append(_truncation(v))
    mean, slo, shi = seed_ci(accs, clip=True)
    n_per_seed = min(ns)  # the items each seed saw (the same items in every seed)
    lo, hi = wilson(mean * n_per_seed, n_per_seed)  # items count once, not once per seed
    return {
        "acc": mean,
        "lo": lo,
        "hi": hi,
        "seed_lo": slo,
        "seed_hi": shi,
        "seeds": len(accs),
        "n_items": sum(ns),
        "n_per_seed": n_per_seed,
        "per_seed": accs,
    } | (
        {  # means over seeds
            "truncated_rate": sum(c[0] for c in cuts) / len(cuts),
            "acc_if_truncated_wrong": sum(c[1] for c in cuts) / len(cuts),
        }
        if cuts and all(c is not None for c in cuts)
        else {}
    )


def _discrimination(rd: RunData, method: str) -> dict | None:
    vals = [v for (m, _), v in rd.disc.items() if m == method]
    if not vals:
        return None
    mean, _, _ = seed_ci([float(v["accuracy"]) for v in vals])
    n = min(int(v.get("n", 0)) for v in vals)  # the same held-out pairs in every seed: count them once
    lo, hi = wilson(mean * n, n) if n else (float("nan"), float("nan"))
    return {"acc": mean, "lo": lo, "hi": hi, "seeds": len(vals), "n": n}


def _ordered_methods(rd: RunData) -> list[str]:
    found = {k[0] for k in rd.evals} | {k[0] for k in rd.disc}
    configured = list(rd.config.get("methods") or {})
    order = list(METHOD_LABELS) + [m for m in configured if m not in METHOD_LABELS]
    return sorted(found, key=lambda m: (order.index(m) if m in order else len(order), m))


def _ordered_benches(rd: RunData) -> list[str]:
    found = list(dict.fromkeys(k[2] for k in rd.evals))
    configured = (rd.config.get("eval") or {}).get("benches") or []
    return [b for b in configured if b in found] + [b for b in found if b not in configured]


def reference_method(rd: RunData, methods: list[str]) -> str | None:
    """The method every other one is tested against: DPO when the run has it, else the plain GRPO method (a
    `trainer: grpo` method with both neuron weights 0), else none."""
    if "dpo" in methods:
        return "dpo"
    cfg = rd.config.get("methods") or {}
    for m in methods:
        k = cfg.get(m) or {}
        if k.get("trainer") == "grpo" and not k.get("neuron_reward_weight") and not k.get("neuron_loss_weight"):
            return m
    return None


def comparison(rd: RunData) -> dict:
    """Per method x bench: seeds, mean accuracy, item and seed CIs, the paired test vs the reference method (DPO, or
    plain GRPO in a GRPO-only run: `vs_ref`); plus discrimination."""
    methods, benches = _ordered_methods(rd), _ordered_benches(rd)
    ref = reference_method(rd, methods)
    table: dict[str, dict[str, dict]] = {}
    for m in methods:
        table[m] = {}
        for b in benches:
            runs = _by_seed(rd, m, b)
            if not runs:
                continue
            table[m][b] = _cell(runs)
            if ref is not None and m != ref:
                t = paired_test(rd, m, ref, b)
                if t is not None:
                    table[m][b]["vs_ref"] = t
    disc = {m: d for m in methods if (d := _discrimination(rd, m))}
    return {"methods": methods, "benches": benches, "table": table, "discrimination": disc, "reference": ref}


def paired_test(rd: RunData, a: str, b: str, bench: str) -> dict | None:
    """Method a vs method b on bench, items paired by id within each seed (a run without a seed, e.g. base,
    pairs with every seed of b). a_only/b_only count (seed, item) rows; p is the exact sign-flip test on the
    per-item mean difference over seeds (yfpo.eval.stats.sign_flip_exact: McNemar's exact test with one
    seed; with several seeds the item, not the (seed, item) row, is the unit, so repeated items do not
    inflate n). p_rows is McNemar's exact test on the pooled rows, kept for reference."""
    ra, rb = _by_seed(rd, a, bench), _by_seed(rd, b, bench)
    if not ra or not rb:
        return None
    xa, xb = [], []
    per_seed: list[dict[str, int]] = []
    per_seed_a: list[dict[str, bool]] = []
    per_seed_b: list[dict[str, bool]] = []
    for sb, vb in sorted(rb.items(), key=lambda kv: str(kv[0])):
        va = ra.get(sb) if sb in ra else ra.get(None)
        if va is None:
            continue
        ca = _item_correct(va["items"], _primary(va["summary"]))
        cb = _item_correct(vb["items"], _primary(vb["summary"]))
        diff = {}
        for iid in sorted(set(ca) & set(cb)):
            xa.append(ca[iid])
            xb.append(cb[iid])
            diff[iid] = int(ca[iid]) - int(cb[iid])
        per_seed.append(diff)
        per_seed_a.append(ca)
        per_seed_b.append(cb)
    if not xa:
        return None
    r = mcnemar(xa, xb)
    common = sorted(set.intersection(*(set(d) for d in per_seed)))
    k = len(per_seed)
    item_diff = [sum(d[i] for d in per_seed) / k for i in common]  # a - b per item, mean over seeds
    sf = sign_flip_exact(item_diff, denominator=k)
    # Newcombe's hybrid score interval over items (the unit of the test), on each item's mean over seeds of a's
    # and b's correct flags: never zero-width while items are few (a bootstrap gives [0, 0] at 0 discordant)
    rate_a = [sum(s[i] for s in per_seed_a) / k for i in common]
    rate_b = [sum(s[i] for s in per_seed_b) / k for i in common]
    ci = paired_diff_ci(rate_b, rate_a)  # a - b
    test = "McNemar exact" if k == 1 else f"exact sign-flip over {len(common)} items (mean of {k} seeds)"
    r.update(
        acc_a=sum(xa) / len(xa),
        acc_b=sum(xb) / len(xb),
        p_rows=r["p"],
        p=sf["p"],
        n_items=len(common),
        seeds=k,
        test=test,
        diff=ci["diff"],
        diff_lo=ci["lo"],
        diff_hi=ci["hi"],
        diff_ci="Newcombe hybrid score 95% CI over items",
    )
    return r

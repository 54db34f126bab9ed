"""The verdict section in plain sentences: did the neuron reward help, and did it help *because* the neurons
are math neurons? A method with the reward is compared with its twin without it (gamma 0) and, when one is
configured, with its twin whose reward uses random neurons (`neurons: random`, same per-layer counts) and
with its twin whose reward has the signs flipped (`neurons: flipped`: rewards pushing the math neurons down)."""

from __future__ import annotations

from functools import lru_cache

from yfpo.eval.power import mde
from yfpo.report.compare import label, paired_test
from yfpo.report.read import RunData
from yfpo.report.render import signed

ALPHA = 0.05
# A non-significant comparison is called "underpowered" when its design could not detect a difference of this
# size (accuracy, absolute) with power 0.8, and "no detectable difference" when it could.
UNDERPOWERED_ABOVE = 0.05
# (method, its baseline without the neuron reward)
NEURON_COMPARISONS = (("yfpo", "dpo"), ("yfpo_fdt", "dpo_fdt"))
MATH_NEURONS = (None, "attnlrp")  # `neurons:` values meaning the run's own (math) NeuronSet


GRPO_WEIGHTS = ("neuron_reward_weight", "neuron_loss_weight")  # a `trainer: grpo` method's neuron signal
# the other ways a `trainer: grpo` method reads the NeuronSet (yfpo.train.online): key -> (the value that does, the
# default it is compared against)
GRPO_NEURON_CHOICES = {"oreal_token_weights": ("neuron", "none"), "merci_features": ("neurons", "hidden")}


def _gamma(c: dict) -> float:
    """The strength of a method's neuron signal: gamma, or for GRPO methods the sum of the neuron weights (plus 1 for
    each online-RL component that reads the NeuronSet: OREAL's token weights, MERCI's state features)."""
    if c.get("trainer") == "grpo":
        on = sum(1.0 for k, (v, _) in GRPO_NEURON_CHOICES.items() if c.get(k) == v)
        return sum(abs(float(c.get(k, 0) or 0)) for k in GRPO_WEIGHTS) + on
    return float(c.get("gamma", 0) or 0)


def _without(c: dict, *keys: str) -> dict:
    """c without `keys` (for GRPO methods "gamma" stands for every neuron signal: the weights and the choices go)."""
    drop = set(keys)
    if "gamma" in keys and c.get("trainer") == "grpo":  # a choice goes only when it is the neuron one or the default
        drop |= set(GRPO_WEIGHTS) | {k for k, (on, off) in GRPO_NEURON_CHOICES.items() if c.get(k) in (on, off)}
    return {k: v for k, v in c.items() if k not in drop}


def neuron_comparisons(methods: dict[str, dict]) -> list[tuple[str, str]]:
    """(method with the neuron reward, the same method without it): the defaults (YFPO vs DPO, YFPO+FDT vs
    DPO+FDT), plus every other configured method with gamma != 0 against the configured method whose keys
    are the same apart from gamma = 0 (e.g. `yfpo_g10: {gamma: 10}` against `dpo: {gamma: 0}`)."""
    out = list(NEURON_COMPARISONS)
    for a, ca in methods.items():
        ca = ca or {}
        if a in dict(out) or not _gamma(ca) or ca.get("neurons") not in MATH_NEURONS:
            continue
        rest = _without(ca, "gamma")
        for b, cb in methods.items():
            cb = cb or {}
            if not _gamma(cb) and _without(cb, "gamma") == rest:
                out.append((a, b))
                break
    return out


def controls(methods: dict[str, dict], kind: str) -> list[tuple[str, str]]:
    """(method rewarded on the math neurons, its twin with `neurons: <kind>` and otherwise the same keys);
    kind "random" (same per-layer counts) or "flipped" (the same neurons, signs flipped)."""
    out = []
    for a, ca in methods.items():
        ca = ca or {}
        if not _gamma(ca) or ca.get("neurons") not in MATH_NEURONS:
            continue
        rest = _without(ca, "neurons")
        for b, cb in methods.items():
            cb = cb or {}
            if cb.get("neurons") == kind and _without(cb, "neurons") == rest:
                out.append((a, b))
                break
    return out


def random_controls(methods: dict[str, dict]) -> list[tuple[str, str]]:
    """(method rewarded on the math neurons, its twin with `neurons: random` and otherwise the same keys)."""
    return controls(methods, "random")


def counts(t: dict) -> str:
    """How many items and rows a paired test saw, stated once and right: '50 items x 3 seeds (150 rows)'."""
    k, n_items = t.get("seeds", 1), t.get("n_items", t["n"])
    return f"{n_items} items" if k == 1 else f"{n_items} items x {k} seeds ({t['n']} paired rows)"


def _sentence(t: dict, a: str, b: str, bench: str, effect: str) -> str:
    la, lb = label(a), label(b)
    diff = 100 * (t["acc_a"] - t["acc_b"])
    if t["p"] < ALPHA:
        what = f"{effect} {'helped' if diff > 0 else 'hurt'} (significant at {ALPHA})"
    else:
        what = f"not significant at {ALPHA}: no evidence here that {effect} {'helped' if diff >= 0 else 'hurt'}"
    rows = "rows" if t.get("seeds", 1) > 1 else "items"
    return (
        f"{la} vs {lb} on {bench}: {100 * t['acc_a']:.1f}% vs {100 * t['acc_b']:.1f}% ({diff:+.1f} points"
        + (f", 95% CI [{signed(t['diff_lo'])}, {signed(t['diff_hi'])}]" if "diff_lo" in t else "")
        + ") "
        f"over {counts(t)}: {t['a_only']} {rows} only {la} right, {t['b_only']} only {lb} right; "
        f"{t['test']} p = {t['p']:.3g} — {what}."
    )


def _helped(t: dict | None) -> bool:
    return t is not None and t["p"] < ALPHA and t["acc_a"] > t["acc_b"]


def _because_math(a: str, base: str, rnd: str, t_base: dict | None, t_rnd: dict | None, bench: str) -> str | None:
    """One sentence joining the two questions, where there is something to join: None when the method did not
    beat its baseline (the verdict table already says so; repeating it per benchmark says nothing new)."""
    la = label(a)
    if t_base is None or t_rnd is None:
        return f"{la} on {bench}: the random-neuron control or the baseline was not evaluated, so the question is open."
    if not _helped(t_base):
        return None
    if _helped(t_rnd):
        return (
            f"So on {bench}: {la} beat {label(base)} and also beat the same reward on random neurons "
            f"({label(rnd)}): the gain is attributable to the math neurons, not to the extra reward term alone."
        )
    return (
        f"So on {bench}: {la} beat {label(base)} but not the same reward on random neurons ({label(rnd)}): "
        f"no evidence that it helped because the neurons are math neurons."
    )


def verdicts(rd: RunData, comp: dict) -> list[str]:
    """Plain sentences: did the neuron reward help (vs its gamma-0 twin), and did the math neurons matter
    (vs its random-neuron twin, when configured)?"""
    methods = rd.config.get("methods") or {}
    out = []
    baselines = dict(neuron_comparisons(methods))
    for a, b in baselines.items():
        for bench in comp["benches"]:
            t = paired_test(rd, a, b, bench)
            if t is not None:
                out.append(_sentence(t, a, b, bench, "the neuron reward"))
        da, db = comp["discrimination"].get(a), comp["discrimination"].get(b)
        if da and db:
            out.append(
                f"{label(a)} vs {label(b)} pair discrimination: {100 * da['acc']:.1f}% vs "
                f"{100 * db['acc']:.1f}% ({100 * (da['acc'] - db['acc']):+.1f} points)."
            )
    for a, r in random_controls(methods):
        for bench in comp["benches"]:
            t_rnd = paired_test(rd, a, r, bench)
            if t_rnd is None:
                continue
            out.append(_sentence(t_rnd, a, r, bench, "choosing math neurons over random ones"))
            if a in baselines:
                joined = _because_math(a, baselines[a], r, paired_test(rd, a, baselines[a], bench), t_rnd, bench)
                if joined:
                    out.append(joined)
    for a, f in controls(methods, "flipped"):
        for bench in comp["benches"]:
            t_flip = paired_test(rd, a, f, bench)
            if t_flip is not None:
                out.append(_sentence(t_flip, a, f, bench, "pushing the math neurons up rather than down"))
    if not out:
        out.append(
            "No YFPO/DPO pair of methods was evaluated on the same items, so the neuron reward's effect "
            "is not measured in this run."
        )
    return out


# ----------------------------------------------------------------------------- the verdict table
def _methods_evaluated(comp: dict) -> set[str]:
    return {m for m in comp["methods"] if comp["table"].get(m)}


def comparisons(rd: RunData, comp: dict) -> list[tuple[str, str, str]]:
    """(method, the method it is compared with, kind) for the verdict table, each evaluated pair once: every
    neuron-reward method against its twin without the reward ("reward"), against each control ("control": random
    neurons, flipped signs), and against the untrained base model ("base")."""
    methods = rd.config.get("methods") or {}
    have = _methods_evaluated(comp)
    out: list[tuple[str, str, str]] = []
    for a, b in neuron_comparisons(methods):
        out.append((a, b, "reward"))
    for kind in ("random", "flipped"):
        out += [(a, b, "control") for a, b in controls(methods, kind)]
    rewarded = list(dict.fromkeys(a for a, _, _ in out))
    if "base" in have:  # did training move anything at all: the reference method and each rewarded one vs base
        ref = comp.get("reference")
        out += [(a, "base", "base") for a in ([ref] if ref and ref not in rewarded else []) + rewarded]
    seen, kept = set(), []
    for a, b, kind in out:
        if a in have and b in have and (a, b) not in seen:
            seen.add((a, b))
            kept.append((a, b, kind))
    return kept


def _oriented_test(rd: RunData, a: str, b: str, bench: str) -> dict | None:
    """paired_test(a, b), also when b is the base model (one run without a seed: the test is run as b vs a, since
    the seedless side pairs with every seed of the other, then turned round)."""
    t = paired_test(rd, a, b, bench)
    if t is not None:
        return t
    t = paired_test(rd, b, a, bench)
    if t is None:
        return None
    return t | {
        "acc_a": t["acc_b"],
        "acc_b": t["acc_a"],
        "a_only": t["b_only"],
        "b_only": t["a_only"],
        "diff": -t["diff"],
        "diff_lo": -t["diff_hi"],
        "diff_hi": -t["diff_lo"],
    }


@lru_cache(maxsize=None)
def _mde(n: int, seeds: int, p_a: float) -> float | None:
    return mde(n, seeds, max(p_a, 1 / (2 * n)), reps=200)  # at 0 correct the rate is below 1/n, not 0


def word(t: dict, detectable: float | None) -> str:
    """better / worse (p < ALPHA), else underpowered (the design cannot detect UNDERPOWERED_ABOVE) or no
    detectable difference."""
    if t["p"] < ALPHA:
        return "better" if t["acc_a"] > t["acc_b"] else "worse"
    if detectable is None or detectable > UNDERPOWERED_ABOVE:
        return "underpowered"
    return "no detectable difference"


def verdict_rows(rd: RunData, comp: dict) -> list[dict]:
    """One row per comparison x benchmark: accuracies, the difference with its 95% CI, the exact p, the smallest
    difference the design could detect (yfpo.eval.power.mde at the comparator's accuracy, the items and seeds of
    the test) and the word."""
    rows = []
    for a, b, kind in comparisons(rd, comp):
        for bench in comp["benches"]:
            t = _oriented_test(rd, a, b, bench)
            if t is None:
                continue
            d = _mde(t["n_items"], t["seeds"], round(t["acc_b"], 6)) if t["n_items"] >= 2 else None
            rows.append({"a": a, "b": b, "kind": kind, "bench": bench, "test": t, "mde": d, "word": word(t, d)})
    return rows


def _points(x: float) -> str:
    return signed(x)


def _group_sentence(rows: list[dict], what: str) -> str:
    names = ", ".join(dict.fromkeys(f"{label(r['a'])} vs {label(r['b'])}" for r in rows))
    better = [r for r in rows if r["word"] == "better"]
    worse = [r for r in rows if r["word"] == "worse"]
    diffs = [r["test"]["acc_a"] - r["test"]["acc_b"] for r in rows]
    if len(rows) == 1:
        r = rows[0]
        verdict = r["word"] if r["word"] in ("better", "worse") else "no significant difference"
        return f"{what} ({names}, {r['bench']}): {verdict} ({_points(diffs[0])} points)."
    lo, hi = _points(min(diffs)), _points(max(diffs))
    span = f"all {lo} points" if lo == hi else f"differences {lo} to {hi} points"

    def where(rs):
        return ", ".join(f"{r['bench']} ({_points(r['test']['acc_a'] - r['test']['acc_b'])})" for r in rs)

    if not better and not worse:
        return f"{what} ({names}): no significant difference in any of the {len(rows)} comparisons ({span})."
    parts = []
    if better:
        parts.append(f"better on {where(better)}")
    if worse:
        parts.append(f"worse on {where(worse)}")
    rest = len(rows) - len(better) - len(worse)
    tail = f"; no significant difference in the other {rest}" if rest else ""
    return f"{what} ({names}): " + "; ".join(parts) + f"{tail} ({span})."


def verdict_summary(rows: list[dict]) -> list[str]:
    """Two to four plain sentences: one per kind of comparison, and one on power."""
    if not rows:
        return []
    out = []
    for kind, what in (
        ("reward", "With vs without the neuron reward"),
        ("control", "Against the controls"),
        ("base", "Against the untrained base model"),
    ):
        rs = [r for r in rows if r["kind"] == kind]
        if rs:
            out.append(_group_sentence(rs, what))
    under = [r for r in rows if r["word"] == "underpowered"]
    if under:
        ds = [r["mde"] for r in under if r["mde"] is not None]
        lo, hi = (f"{100 * min(ds):.1f}", f"{100 * max(ds):.1f}") if ds else ("", "")
        size = (
            "no difference detectable at this size"
            if not ds
            else f"smallest detectable difference {lo} points"
            if lo == hi
            else f"smallest detectable differences {lo} to {hi} points"
        )
        out.append(
            f"{len(under)} of the {len(rows)} comparisons are underpowered ({size}): there a non-significant result "
            "rules out only large effects, and is not evidence that the methods are the same."
        )
    return out

"""The verdict section in plain sentences: did the neuron reward help, and did it help *because* the neurons
are math neurons? A method with the reward is compared with its twin without it (gamma 0) and, when one is
configured, with its twin whose reward uses random neurons (`neurons: random`, same per-layer counts) and
with its twin whose reward has the signs flipped (`neurons: flipped`: rewards pushing the math neurons down)."""

from __future__ import annotations

from yfpo.report.compare import label, paired_test
from yfpo.report.read import RunData

ALPHA = 0.05
# (method, its baseline without the neuron reward)
NEURON_COMPARISONS = (("yfpo", "dpo"), ("yfpo_fdt", "dpo_fdt"))
MATH_NEURONS = (None, "attnlrp")  # `neurons:` values meaning the run's own (math) NeuronSet


GRPO_WEIGHTS = ("neuron_reward_weight", "neuron_loss_weight")  # a `trainer: grpo` method's neuron signal


def _gamma(c: dict) -> float:
    """The strength of a method's neuron signal: gamma, or for GRPO methods the sum of the neuron weights."""
    if c.get("trainer") == "grpo":
        return sum(abs(float(c.get(k, 0) or 0)) for k in GRPO_WEIGHTS)
    return float(c.get("gamma", 0) or 0)


def _without(c: dict, *keys: str) -> dict:
    """c without `keys` (for GRPO methods "gamma" stands for the neuron weights: both go)."""
    drop = set(keys) | (set(GRPO_WEIGHTS) if "gamma" in keys and c.get("trainer") == "grpo" else set())
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


def _sentence(t: dict, a: str, b: str, bench: str, effect: str) -> str:
    la, lb = label(a), label(b)
    diff = 100 * (t["acc_a"] - t["acc_b"])
    if t["p"] < ALPHA:
        what = f"{effect} {'helped' if diff > 0 else 'hurt'} (significant at {ALPHA})"
    else:
        what = f"not significant at {ALPHA}: no evidence here that {effect} {'helped' if diff >= 0 else 'hurt'}"
    return (
        f"{la} vs {lb} on {bench}: {100 * t['acc_a']:.1f}% vs {100 * t['acc_b']:.1f}% ({diff:+.1f} points"
        + (f", 95% CI [{100 * t['diff_lo']:+.1f}, {100 * t['diff_hi']:+.1f}]" if "diff_lo" in t else "")
        + ") "
        f"over {t['n']} paired items ({t['a_only']} only {la} right, {t['b_only']} only {lb} right); "
        f"{t['test']} p = {t['p']:.3g} — {what}."
    )


def _helped(t: dict | None) -> bool:
    return t is not None and t["p"] < ALPHA and t["acc_a"] > t["acc_b"]


def _because_math(a: str, base: str, rnd: str, t_base: dict | None, t_rnd: dict | None, bench: str) -> str:
    """One sentence joining the two questions."""
    la = label(a)
    if t_base is None or t_rnd is None:
        return f"{la} on {bench}: the random-neuron control or the baseline was not evaluated, so the question is open."
    if not _helped(t_base):
        return (
            f"So on {bench}: {la} did not significantly beat {label(base)}, so there is no effect to attribute "
            f"to the math neurons."
        )
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
                out.append(_because_math(a, baselines[a], r, paired_test(rd, a, baselines[a], bench), t_rnd, bench))
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

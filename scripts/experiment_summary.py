"""What a `yfpo run` experiment did to the neuron margin and the outputs, beside the report's accuracy verdict.

    python scripts/experiment_summary.py RUN_DIR [--heldout-start N] [--out DIR] [--methods yfpo,dpo,yfpo_random]

For issue 9 ("a neuron reward that actually steers training") and issue 12 (the experiment), from the run
directory alone:
1. training: per method x seed, the mean over steps of neuron/logit_share (|gamma m'| / (|beta delta'| +
   |gamma m'|)), neuron/grad_share, neuron/gamma_eff, and the last logged loss / reward margin;
2. outputs: per benchmark and seed, on how many items two methods' greedy outputs differ (text), e.g. YFPO vs
   the same-seed DPO (docs/results/cpu_result: 1 of 240);
3. held-out neuron margin: m = phi(chosen) - phi(rejected) with the run's own NeuronSet on the pairs the
   trainings did not see (pairs[N:], N = train.limit_pairs by default), for the base and every final model
   (yfpo.eval.margin: the trainer's own measure); paired YFPO - DPO differences per seed and averaged over
   seeds per pair (pairs are the unit: SE over pairs, exact sign-flip p over pairs);
4. the minimum detectable accuracy difference of this design (scripts/power_plan.py's model at the run's item
   count, seed count and the measured base accuracy).
Writes summary.json and summary.md to --out (default RUN_DIR/summary). Loads each model once (~1 min per model
for 30 pairs on one CPU thread).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import statistics
import sys
from pathlib import Path


def _power_plan():
    spec = importlib.util.spec_from_file_location("power_plan", Path(__file__).with_name("power_plan.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def training_table(rd) -> dict:
    out = {}
    for tag, rows in sorted(rd.metrics.items()):
        steps = [r for r in rows if "loss" in r and "event" not in r]
        out[tag] = {
            "steps": len(steps),
            "logit_share_mean": _mean([r.get("neuron/logit_share") for r in steps]),
            "grad_share_mean": _mean([r.get("neuron/grad_share") for r in steps]),
            "gamma_eff": _mean([r.get("neuron/gamma_eff") for r in steps]),
            "last_loss": steps[-1].get("loss") if steps else None,
            "last_reward_margin": steps[-1].get("rewards/margins") if steps else None,
        }
    return out


def output_diffs(rd, pairs_of_methods: list[tuple[str, str]]) -> dict:
    out = {}
    seeds = sorted({s for (_, s, _) in rd.evals if s is not None})
    benches = sorted({b for (_, _, b) in rd.evals})
    for a, b in pairs_of_methods:
        for bench in benches:
            per_seed = {}
            for s in seeds:
                ea, eb = rd.evals.get((a, s, bench)), rd.evals.get((b, s, bench))
                if not ea or not eb:
                    continue
                ia = {r["id"]: r.get("output") for r in ea["items"]}
                ib = {r["id"]: r.get("output") for r in eb["items"]}
                if all(v is None for v in ia.values()):
                    continue  # no generated text (MMLU is scored by letter log-probs)
                common = sorted(set(ia) & set(ib))
                per_seed[s] = {"n": len(common), "differ": sum(ia[i] != ib[i] for i in common)}
            if per_seed:
                n = sum(v["n"] for v in per_seed.values())
                d = sum(v["differ"] for v in per_seed.values())
                out[f"{a} vs {b} / {bench}"] = {"per_seed": per_seed, "n": n, "differ": d, "share": d / n}
    return out


def signflip_p(diffs: list[float], reps: int = 200000, seed: int = 0) -> float:
    """Two-sided sign-flip p for mean(diffs) = 0 (exact enumeration up to 20 values, else Monte Carlo)."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    obs = abs(d.mean())
    if len(d) <= 20:
        signs = np.array(list(itertools.product((-1, 1), repeat=len(d))))
    else:
        signs = np.random.default_rng(seed).choice((-1, 1), size=(reps, len(d)))
    return float(((np.abs((signs * d).mean(1)) >= obs - 1e-15).sum()) / len(signs))


def heldout_margins(rd, start: int, models: dict[str, str]) -> dict:
    from yfpo.data.pairs import load_pairs
    from yfpo.eval.margin import neuron_margins, summarize
    from yfpo.models import load_model

    staged = [rd.dir / s["dir"] / "pairs.jsonl" for s in rd.stages if s["kind"] == "pairs"]
    pairs_path = staged[0] if staged else Path(rd.config["pairs_file"])  # the pairs stage, or the run's file
    held = load_pairs(pairs_path)[start:]
    if not held:
        raise SystemExit(f"{pairs_path}: no pairs after the first {start} (nothing held out)")
    res = {}
    for tag, path in models.items():
        print(f"[summary] held-out margin: {tag} ({len(held)} pairs)", flush=True)
        model, tok = load_model(path)
        ms = neuron_margins(model, tok, rd.neurons, held, allow_other_weights=tag != "base")  # trained: base's set
        res[tag] = {**summarize(ms), "per_pair": ms}
        del model
    return {"pairs": str(pairs_path), "start": start, "n": len(held), "models": res}


def paired(margins: dict, a: str, b: str, seeds: list[int]) -> dict:
    """b - a per seed (SE over pairs) and averaged over seeds per pair (pairs the unit)."""
    m = margins["models"]
    per_seed, rows = {}, []
    for s in seeds:
        ka, kb = f"{a}-s{s}", f"{b}-s{s}"
        if ka in m and kb in m:
            d = [y - x for x, y in zip(m[ka]["per_pair"], m[kb]["per_pair"])]
            sd = statistics.stdev(d) if len(d) > 1 else 0.0
            per_seed[s] = {"mean": statistics.fmean(d), "se": sd / len(d) ** 0.5, "b_higher": sum(x > 0 for x in d)}
            rows.append(d)
    if not rows:
        return {}
    avg = [statistics.fmean(col) for col in zip(*rows)]
    sd = statistics.stdev(avg) if len(avg) > 1 else 0.0
    se = sd / len(avg) ** 0.5
    mean = statistics.fmean(avg)
    return {
        "per_seed": per_seed,
        "mean": mean,
        "se": se,
        "mean_over_se": mean / se if se else None,
        "n_pairs": len(avg),
        "seeds": len(rows),
        "signflip_p": signflip_p(avg),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--heldout-start", type=int, default=None, help="first held-out pair (default: train.limit_pairs)")
    ap.add_argument("--out", default=None, help="output folder (default RUN_DIR/summary)")
    ap.add_argument("--no-margins", action="store_true", help="skip the held-out margins (no model is loaded)")
    ap.add_argument(
        "--margins-from", default=None, help="a summary.json whose held-out margins to reuse (same run and pairs)"
    )
    args = ap.parse_args(argv)

    from yfpo.report.read import read_run

    rd = read_run(args.run_dir)
    out = Path(args.out) if args.out else rd.dir / "summary"
    out.mkdir(parents=True, exist_ok=True)
    cfg = rd.config
    start = args.heldout_start if args.heldout_start is not None else (cfg.get("train") or {}).get("limit_pairs")
    methods = sorted({m for (m, s, _) in rd.evals if s is not None})
    seeds = sorted({s for (_, s, _) in rd.evals if s is not None})
    res: dict = {"run_dir": str(rd.dir), "methods": methods, "seeds": seeds}
    res["training"] = training_table(rd)
    comps = [
        (a, b)
        for a, b in (
            ("dpo", "yfpo"),
            ("dpo", "yfpo_random"),
            ("yfpo_random", "yfpo"),
            ("dpo", "yfpo_flip"),
            ("yfpo_flip", "yfpo"),
            ("dpo_half", "yfpo_half"),
            ("dpo", "yfpo_half"),
            ("dpo", "dpo_half"),
        )
        if {a, b} <= set(methods)
    ]
    res["output_diffs"] = output_diffs(rd, comps)

    base_acc = {}
    for (m, s, bench), e in rd.evals.items():
        if m == "base":
            prim = e["summary"].get("primary", "flexible")
            base_acc[bench] = (e["summary"]["accuracy"][prim]["acc"], e["summary"]["n"])
    pp = _power_plan()
    res["mde"] = {}
    for bench, (p, n) in sorted(base_acc.items()):
        p_a = max(p, 1.0 / (2 * n))  # at 0 correct the model's rate is below 1/n, not 0
        d = pp.mde(n, len(seeds), p_a, reps=200)  # None: no difference is detectable at this size
        res["mde"][bench] = {
            "n": n,
            "seeds": len(seeds),
            "base_acc": p,
            "p_a_used": p_a,
            "mde_points": None if d is None else 100 * d,
        }

    if not args.no_margins and start:
        models = {"base": cfg.get("model", "default")}
        for s in rd.stages:
            if s["kind"] == "train" and (rd.dir / s["dir"] / "done.json").exists():
                rec = json.loads((rd.dir / s["dir"] / "done.json").read_text())
                models[f"{s['method']}-s{s['seed']}"] = str(rd.dir / rec["outputs"]["final"])
        if args.margins_from:  # reuse those margins, measure only the models they lack
            res["heldout_margin"] = json.loads(Path(args.margins_from).read_text())["heldout_margin"]
            if res["heldout_margin"]["start"] != start:
                raise SystemExit(f"--margins-from {args.margins_from}: held out from pair {start}, not this run's")
            missing = {k: v for k, v in models.items() if k not in res["heldout_margin"]["models"]}
            if missing:
                res["heldout_margin"]["models"].update(heldout_margins(rd, start, missing)["models"])
        else:
            res["heldout_margin"] = heldout_margins(rd, start, models)
        res["margin_paired"] = {f"{b} - {a}": paired(res["heldout_margin"], a, b, seeds) for a, b in comps}

    (out / "summary.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "summary.md").write_text(render(res))
    print(render(res))
    print(f"[summary] written to {out}/summary.json and summary.md")
    return 0


def _f(x, nd=4, sign=False):
    if x is None:
        return "-"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def render(res: dict) -> str:
    L = [f"# Experiment summary: {res['run_dir']}", "", "## Training (means over logged steps)", ""]
    L += [
        "| run | steps | logit_share | grad_share | gamma_eff | last loss | last reward margin |",
        "|---|---|---|---|---|---|---|",
    ]
    for tag, t in res["training"].items():
        L.append(
            f"| {tag} | {t['steps']} | {_f(t['logit_share_mean'], 3)} | {_f(t['grad_share_mean'], 3)} | "
            f"{_f(t['gamma_eff'], 2)} | {_f(t['last_loss'], 4)} | {_f(t['last_reward_margin'], 4)} |"
        )
    L += ["", "## Greedy outputs that differ (text), per benchmark, summed over seeds", ""]
    L += ["| comparison | differ / items | share | per seed |", "|---|---|---|---|"]
    for k, v in res["output_diffs"].items():
        ps = ", ".join(f"s{s}: {d['differ']}/{d['n']}" for s, d in v["per_seed"].items())
        L.append(f"| {k} | {v['differ']}/{v['n']} | {100 * v['share']:.1f}% | {ps} |")
    if "heldout_margin" in res:
        h = res["heldout_margin"]
        L += ["", f"## Held-out neuron margin (own NeuronSet, pairs {h['start']}.. of the run's pairs: {h['n']})", ""]
        L += ["| model | mean m | SE | positive |", "|---|---|---|---|"]
        for tag, m in h["models"].items():
            L.append(f"| {tag} | {_f(m['mean'], 4, True)} | {_f(m['se'], 4)} | {100 * m['frac_positive']:.0f}% |")
        L += ["", "Paired differences (pairs the unit; per seed, and averaged over seeds per pair):", ""]
        L += [
            "| difference | mean | SE | mean / SE | sign-flip p | per seed (mean ± SE) |",
            "|---|---|---|---|---|---|",
        ]
        for k, v in res["margin_paired"].items():
            if not v:
                continue
            ps = "; ".join(f"s{s}: {_f(d['mean'], 4, True)} ± {_f(d['se'], 4)}" for s, d in v["per_seed"].items())
            L.append(
                f"| {k} | {_f(v['mean'], 4, True)} | {_f(v['se'], 4)} | {_f(v['mean_over_se'], 2)} | "
                f"{v['signflip_p']:.4f} | {ps} |"
            )
    L += ["", "## Smallest detectable accuracy difference of this design", ""]
    L += [
        "| benchmark | items | seeds | base accuracy | MDE (points, alpha 0.05, power 0.8) |",
        "|---|---|---|---|---|",
    ]
    for b, m in res["mde"].items():
        mde = "none detectable" if m["mde_points"] is None else f"{m['mde_points']:.1f}"
        L.append(f"| {b} | {m['n']} | {m['seeds']} | {100 * m['base_acc']:.1f}% | {mde} |")
    L.append("")
    L.append(
        "MDE from scripts/power_plan.py's outcome model (churn 0.21 measured on cpu_result, rho 0.5 assumed); "
        "at 0 correct items the base rate used is 1/(2n)."
    )
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`yfpo report RUN_DIR`: a run directory (run.json + stage folders) -> report.md + self-contained report.html.

Reads only files in their documented schemas: run.json (yfpo.run), NeuronSet JSON, check.json, the pairs
summary.json, the trainer's metrics.jsonl, eval summary.json + items.jsonl, discrimination.json. Stages that
have not finished are shown as missing, so a partial run still gives a report.

Statistics (SPEC sections 7-8): accuracy per method x benchmark is the mean over seeds of the primary
extractor's accuracy, with the Wilson 95% CI over the items, each counted once (items_once_wilson: an item's
correctness averaged over seeds; (seed, item) rows are not pooled as independent) and, with >= 2 seeds, a
t-interval over the seed means; significance against DPO is McNemar's exact test on items paired by id
with one seed, and with several seeds its generalisation that keeps the item as the unit: an exact
sign-flip test on each item's mean difference over seeds (yfpo.eval.stats.sign_flip_exact). The untrained
base model is paired with every DPO seed.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yfpo.utils import atomic_write_text, now

ALPHA = 0.05
METHOD_LABELS = {"base": "base (untrained)", "dpo": "DPO", "yfpo": "YFPO", "dpo_fdt": "DPO+FDT", "yfpo_fdt": "YFPO+FDT"}
# (method, its baseline without the neuron reward)
NEURON_COMPARISONS = (("yfpo", "dpo"), ("yfpo_fdt", "dpo_fdt"))


# ----------------------------------------------------------------------------- statistics (yfpo.eval.stats)

def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion k/n."""
    from yfpo.eval.stats import wilson_ci

    return wilson_ci(k, n)


def items_once_wilson(per_seed: list[dict[str, bool]]) -> tuple[float, float, int]:
    """Wilson 95% interval of accuracy with each item counted once: with several seeds, the (seed, item) rows
    are not independent draws (the seeds share the items), so pooling them would be ~sqrt(seeds) too narrow.
    Each item's correctness is averaged over the seeds that evaluated it; the interval is Wilson's on
    (sum of those means, number of distinct items) - exact Wilson with one seed, conservative with several
    (an item's mean varies less than a 0/1 outcome). Returns (lo, hi, distinct items)."""
    by_item: dict[str, list[bool]] = {}
    for corr in per_seed:
        for i, c in corr.items():
            by_item.setdefault(i, []).append(bool(c))
    n = len(by_item)
    k = sum(sum(v) / len(v) for v in by_item.values())
    lo, hi = wilson(k, n)
    return lo, hi, n


def seed_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval over seeds (zero width with one seed)."""
    from yfpo.eval.stats import mean_ci

    r = mean_ci(values)
    return r["mean"], r["lo"], r["hi"]


def mcnemar(a: list[bool], b: list[bool]) -> dict:
    """McNemar's exact test on paired outcomes; a_only = items only a got right, b_only = only b."""
    from yfpo.eval.stats import mcnemar_exact

    r = mcnemar_exact(a, b)
    return {"n": len(a), "a_only": r["b10"], "b_only": r["b01"], "p": r["p"]}


# ----------------------------------------------------------------------------- reading the run

@dataclass
class RunData:
    dir: Path
    index: dict
    config: dict
    neurons: Path | None = None
    check: dict | None = None
    check_png: Path | None = None
    pairs: dict | None = None
    metrics: dict[str, list[dict]] = field(default_factory=dict)  # "method-s<seed>" -> rows
    evals: dict[tuple[str, Any, str], dict] = field(default_factory=dict)  # (method, seed, bench) -> {summary, items}
    disc: dict[tuple[str, Any], dict] = field(default_factory=dict)  # (method, seed) -> discrimination.json
    stages: list[dict] = field(default_factory=list)


def _done(folder: Path) -> bool:
    return (folder / "done.json").exists()


def _jsonl(path: Path) -> list[dict]:
    from yfpo.utils import read_jsonl_resume

    return read_jsonl_resume(path) if path.exists() else []


def read_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    idx_path = run_dir / "run.json"
    if not idx_path.exists():
        raise FileNotFoundError(f"{idx_path} does not exist; is {run_dir} a `yfpo run` directory?")
    index = json.loads(idx_path.read_text())
    rd = RunData(dir=run_dir, index=index, config=index.get("config", {}), stages=index.get("stages", []))
    for s in rd.stages:
        folder = run_dir / s["dir"]
        s["finished"] = _done(folder)
        kind = s["kind"]
        if kind == "neurons" and (folder / "neurons.json").exists():
            rd.neurons = folder / "neurons.json"
        elif kind == "check" and s["finished"]:
            rec = json.loads((folder / "done.json").read_text())
            cj = folder / "check.json"
            rd.check = json.loads(cj.read_text()) if cj.exists() else rec.get("outputs", {})
            png = (rec.get("outputs", {}).get("paths") or {}).get("png")
            if png and (run_dir / png).exists():
                rd.check_png = run_dir / png
            elif list(folder.glob("*.png")):
                rd.check_png = sorted(folder.glob("*.png"))[0]
        elif kind == "pairs" and (folder / "summary.json").exists():
            rd.pairs = json.loads((folder / "summary.json").read_text())
        elif kind == "train":
            from yfpo.utils import read_metrics  # resume markers applied, end summary dropped

            rows = read_metrics(folder / "metrics.jsonl")
            if rows:
                rd.metrics[f"{s['method']}-s{s['seed']}"] = rows
        elif kind == "eval" and s["finished"] and (folder / "summary.json").exists():
            rd.evals[(s["method"], s["seed"], s["bench"])] = {
                "summary": json.loads((folder / "summary.json").read_text()), "items": _jsonl(folder / "items.jsonl")}
        elif kind == "discrimination" and s["finished"] and (folder / "discrimination.json").exists():
            rd.disc[(s["method"], s["seed"])] = json.loads((folder / "discrimination.json").read_text())
    return rd


# ----------------------------------------------------------------------------- the numbers

def _primary(summary: dict) -> str:
    return summary.get("primary") or "flexible"


def _item_correct(items: list[dict], ext: str) -> dict[str, bool]:
    return {str(it["id"]): bool((it.get("correct") or {}).get(ext, False)) for it in items}


def comparison(rd: RunData) -> dict:
    """Per method x bench: seeds, mean accuracy, item and seed CIs, McNemar vs DPO; plus discrimination."""
    methods = sorted({k[0] for k in rd.evals} | {k[0] for k in rd.disc},
                     key=lambda m: (list(METHOD_LABELS).index(m) if m in METHOD_LABELS else 99, m))
    benches = list(dict.fromkeys([k[2] for k in rd.evals]))
    cfg_benches = (rd.config.get("eval") or {}).get("benches") or []
    benches = [b for b in cfg_benches if b in benches] + [b for b in benches if b not in cfg_benches]
    table: dict[str, dict[str, dict]] = {}
    for m in methods:
        table[m] = {}
        for b in benches:
            runs = {s: v for (mm, s, bb), v in rd.evals.items() if mm == m and bb == b}
            if not runs:
                continue
            accs, n, per_seed = [], 0, []
            for s, v in sorted(runs.items(), key=lambda kv: str(kv[0])):
                ext = _primary(v["summary"])
                corr = _item_correct(v["items"], ext)
                if not corr:  # no items.jsonl: the summary's counts, as anonymous items shared by the seeds
                    a = v["summary"]["accuracy"][ext]
                    k_s = a.get("n_correct", round(a["acc"] * v["summary"]["n"]))
                    corr = {f"#{i}": i < k_s for i in range(v["summary"]["n"])}
                accs.append(sum(corr.values()) / len(corr) if corr else 0.0)
                n += len(corr)
                per_seed.append(corr)
            mean, slo, shi = seed_ci(accs)
            lo, hi, n_distinct = items_once_wilson(per_seed)
            table[m][b] = {"acc": mean, "lo": lo, "hi": hi, "seed_lo": slo, "seed_hi": shi, "seeds": len(accs),
                           "n_items": n, "n_distinct_items": n_distinct, "per_seed": accs}
            if m != "dpo":
                t = paired_test(rd, m, "dpo", b)
                if t is not None:
                    table[m][b]["vs_dpo"] = t
    disc = {}
    for m in methods:
        vals = [v for (mm, s), v in rd.disc.items() if mm == m]
        if vals:
            accs = [float(v["accuracy"]) for v in vals]
            mean, slo, shi = seed_ci(accs)
            n = sum(int(v.get("n", 0)) for v in vals)
            # the seeds score the same held-out pairs: each pair counts once (items_once_wilson)
            per_seed = [{f"#{i}": i < round(float(v["accuracy"]) * int(v.get("n", 0))) for i in range(int(v.get("n", 0)))}
                        for v in vals]
            lo, hi, _ = items_once_wilson(per_seed) if n else (float("nan"), float("nan"), 0)
            disc[m] = {"acc": mean, "lo": lo, "hi": hi, "seeds": len(vals), "n": n}
    return {"methods": methods, "benches": benches, "table": table, "discrimination": disc}


def paired_test(rd: RunData, a: str, b: str, bench: str) -> dict | None:
    """Method a vs method b on bench, items paired by id within each seed (a run without a seed, e.g. base,
    pairs with every seed of b). a_only/b_only count (seed, item) rows; p is the exact sign-flip test on the
    per-item mean difference over seeds (yfpo.eval.stats.sign_flip_exact: McNemar's exact test with one
    seed; with several seeds the item, not the (seed, item) row, is the unit, so repeated items do not
    inflate n). p_rows is McNemar's exact test on the pooled rows, kept for reference."""
    from yfpo.eval.stats import sign_flip_exact

    ra = {s: v for (m, s, bb), v in rd.evals.items() if m == a and bb == bench}
    rb = {s: v for (m, s, bb), v in rd.evals.items() if m == b and bb == bench}
    if not ra or not rb:
        return None
    xa, xb = [], []
    per_seed: list[dict[str, int]] = []
    for sb, vb in sorted(rb.items(), key=lambda kv: str(kv[0])):
        va = ra.get(sb) if sb in ra else (ra.get(None) if None in ra else None)
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
    if not xa:
        return None
    r = mcnemar(xa, xb)
    common = sorted(set.intersection(*(set(d) for d in per_seed)))
    k = len(per_seed)
    sf = sign_flip_exact([sum(d[i] for d in per_seed) / k for i in common], denominator=k)
    test = "McNemar exact" if k == 1 else f"exact sign-flip over {len(common)} items (mean of {k} seeds)"
    r.update(acc_a=sum(xa) / len(xa), acc_b=sum(xb) / len(xb), p_rows=r["p"], p=sf["p"], n_items=len(common),
             seeds=k, test=test)
    return r


def neuron_comparisons(methods: dict[str, dict]) -> list[tuple[str, str]]:
    """(method with the neuron reward, the same method without it): the defaults (YFPO vs DPO, YFPO+FDT vs
    DPO+FDT), plus every other configured method with gamma != 0 against the configured method whose keys
    are the same apart from gamma = 0 (e.g. `yfpo_g10: {gamma: 10}` against `dpo: {gamma: 0}`)."""
    out = list(NEURON_COMPARISONS)
    for a, ca in methods.items():
        ca = ca or {}
        if a in dict(out) or not float(ca.get("gamma", 0) or 0):
            continue
        rest = {k: v for k, v in ca.items() if k != "gamma"}
        for b, cb in methods.items():
            cb = cb or {}
            if not float(cb.get("gamma", 0) or 0) and {k: v for k, v in cb.items() if k != "gamma"} == rest:
                out.append((a, b))
                break
    return out


def verdicts(rd: RunData, comp: dict) -> list[str]:
    """Plain sentences: did the neuron reward help (YFPO vs DPO, YFPO+FDT vs DPO+FDT)?"""
    out = []
    for a, b in neuron_comparisons(rd.config.get("methods") or {}):
        for bench in comp["benches"]:
            t = paired_test(rd, a, b, bench)
            if t is None:
                continue
            la, lb = METHOD_LABELS.get(a, a), METHOD_LABELS.get(b, b)
            diff = 100 * (t["acc_a"] - t["acc_b"])
            sig = t["p"] < ALPHA
            if sig:
                what = (f"the neuron reward {'helped' if diff > 0 else 'hurt'} (significant at {ALPHA})")
            else:
                what = f"not significant at {ALPHA}: no evidence here that the neuron reward helped" if diff >= 0 else \
                       f"not significant at {ALPHA}: no evidence here that the neuron reward hurt"
            out.append(f"{la} vs {lb} on {bench}: {100 * t['acc_a']:.1f}% vs {100 * t['acc_b']:.1f}% "
                       f"({diff:+.1f} points) over {t['n']} paired items ({t['a_only']} only {la} right, "
                       f"{t['b_only']} only {lb} right); {t['test']} p = {t['p']:.3g} — {what}.")
        da, db = comp["discrimination"].get(a), comp["discrimination"].get(b)
        if da and db:
            out.append(f"{METHOD_LABELS.get(a, a)} vs {METHOD_LABELS.get(b, b)} pair discrimination: "
                       f"{100 * da['acc']:.1f}% vs {100 * db['acc']:.1f}% ({100 * (da['acc'] - db['acc']):+.1f} points).")
    if not out:
        out.append("No YFPO/DPO pair of methods was evaluated on the same items, so the neuron reward's effect "
                   "is not measured in this run.")
    return out


# ----------------------------------------------------------------------------- document blocks -> md / html

def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(c: dict | None) -> str:
    if not c:
        return "—"
    s = f"{_pct(c['acc'])} [{_pct(c['lo'])}, {_pct(c['hi'])}]"
    if c.get("seeds", 1) >= 2:
        s += f" seeds [{_pct(c['seed_lo'])}, {_pct(c['seed_hi'])}]"
    if "vs_dpo" in c:
        s += f" p={c['vs_dpo']['p']:.2g}"
    return s


class Doc:
    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def img(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", Path(path), alt))

    def markdown(self, base: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {x}" for x in b[1]))
            elif b[0] == "pre":
                out.append("```\n" + b[1].rstrip() + "\n```")
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |\n|" + "|".join(" --- " for _ in b[1]) + "|\n" +
                           "\n".join("| " + " | ".join(r) + " |" for r in b[2]))
            elif b[0] == "img":
                try:
                    rel = b[1].resolve().relative_to(base.resolve())
                except ValueError:
                    rel = b[1]
                out.append(f"![{b[2]}]({rel})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                body.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "pre":
                body.append(f"<pre>{e(b[1])}</pre>")
            elif b[0] == "table":
                body.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr></thead><tbody>" +
                            "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]) +
                            "</tbody></table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode()
                body.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}"/>'
                            f"<figcaption>{e(b[2])}</figcaption></figure>")
        css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
               "font-size:14px;text-align:left}th{background:#f3f3f3}pre{background:#f7f7f7;padding:8px;"
               "overflow-x:auto;font-size:12px}img{max-width:100%}figcaption{font-size:12px;color:#666}")
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{css}</style>"
                f"</head><body>{''.join(body)}</body></html>\n")


# ----------------------------------------------------------------------------- the report

def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.md, report.html (PNGs inlined) and the PNGs to out_dir (default RUN_DIR/report);
    returns the path of report.html."""
    import yaml

    from yfpo.report.plots import accuracy_bars, training_curves

    rd = read_run(run_dir)
    out = Path(out_dir) if out_dir else rd.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    comp = comparison(rd)
    name = rd.index.get("name", rd.dir.name)
    doc = Doc()
    doc.h(1, f"yfpo run report: {name}")
    doc.p(f"Run directory {rd.dir} — report built {now()}. Model: {rd.config.get('model')}; seeds: "
          f"{rd.config.get('seeds')}; methods: {', '.join(rd.config.get('methods', {}) or [])}.")
    unfinished = [s["name"] for s in rd.stages if not s.get("finished")]
    if unfinished:
        doc.p("Unfinished stages (missing from the tables below): " + ", ".join(unfinished) + ".")

    # verdict + comparison
    doc.h(2, "Did the neuron reward help?")
    doc.ul(verdicts(rd, comp))
    doc.h(2, "Comparison")
    ex = next(iter(rd.evals.values()), None)
    prim = _primary(ex["summary"]) if ex else "flexible"
    doc.p(f"Accuracy (%) with the `{prim}` extractor: mean over seeds [Wilson 95% CI over the items, each counted once]"
          "; with 2+ seeds also the t 95% CI over seeds; p = exact test against DPO on paired items (McNemar's "
          "with one seed; with several, an exact sign-flip test on each item's mean difference over seeds, so an "
          "item counts once). Discrimination: how often the model gives the correct solution of a held-out "
          "(correct, incorrect) pair the higher length-normalised log-likelihood.")
    header = ["method", "seeds"] + [f"{b} (n/seed)" for b in comp["benches"]] + ["pair discrimination"]
    rows = []
    for m in comp["methods"]:
        cells = [comp["table"][m].get(b) for b in comp["benches"]]
        seeds = max([c["seeds"] for c in cells if c] + [comp["discrimination"].get(m, {}).get("seeds", 0)])
        d = comp["discrimination"].get(m)
        rows.append([METHOD_LABELS.get(m, m), str(seeds)] + [_cell(c) for c in cells] +
                    [f"{_pct(d['acc'])} [{_pct(d['lo'])}, {_pct(d['hi'])}] (n={d['n']})" if d else "—"])
    for i, b in enumerate(comp["benches"]):
        ns = {c["n_items"] // max(c["seeds"], 1) for m in comp["methods"] if (c := comp["table"][m].get(b))}
        header[2 + i] = f"{b} (n={'/'.join(str(x) for x in sorted(ns))})"
    if rows:
        doc.table(header, rows)
        png = accuracy_bars({METHOD_LABELS.get(m, m): comp["table"][m] for m in comp["methods"]}, comp["benches"],
                            out / "accuracy.png")
        if png:
            doc.img(png, "accuracy per method and benchmark (error bars: Wilson 95% CI over items)")
    else:
        doc.p("No evaluation has finished yet.")
    if ex:
        proto = ex["summary"].get("protocol", {})
        doc.p("Evaluation protocol: " + "; ".join(f"{k} = {v}" for k, v in proto.items() if k != "template") +
              (f"; template: {proto.get('template')}" if proto.get("template") else "") + ".")

    # training
    doc.h(2, "Training")
    if rd.metrics:
        png = training_curves(rd.metrics, out / "training_curves.png")
        if png:
            doc.img(png, "training curves: loss, DPO reward margin, neuron margin, accuracies")
        keys = ["loss", "rewards/margins", "rewards/accuracies", "neuron/margin", "neuron/accuracy"]
        trows = []
        for label, mrows in rd.metrics.items():
            tail = mrows[-max(1, len(mrows) // 10):]
            vals = []
            for k in keys:
                xs = [r[k] for r in tail if r.get(k) is not None]
                vals.append(f"{sum(xs) / len(xs):.3f}" if xs else "—")
            trows.append([label, str(mrows[-1].get("step", len(mrows)))] + vals)
        doc.p("Last logged values (mean over the final tenth of the logged steps):")
        doc.table(["run", "steps"] + keys, trows)
    else:
        doc.p("No training metrics yet.")

    # pairs
    doc.h(2, "Preference pairs")
    if rd.pairs:
        s = rd.pairs
        acc = s.get("sample_accuracy")
        doc.ul([f"{s['questions']} questions ({s.get('bench')}), {s['samples']} samples, sample accuracy "
                f"{'n/a' if acc is None else f'{100 * acc:.1f}%'}",
                f"{s['pairs']} pairs by source: {s.get('pairs_by_source')}" +
                (f"; {s['step_pairs']} Step-DPO pairs" if s.get("step_pairs") else ""),
                f"dropped samples: {s.get('dropped') or 'none'}; questions with a correct sample: "
                f"{s.get('questions_with_a_correct_sample')}, all correct (no pair): {s.get('questions_all_correct')}"])
    elif rd.config.get("pairs_file"):
        doc.p(f"Pairs read from {rd.config['pairs_file']}.")
    else:
        doc.p("Pairs stage not finished.")

    # neurons
    doc.h(2, "Math neurons")
    if rd.neurons is not None:
        from yfpo.neurons.show import plot_layer_counts, summary_text

        doc.pre(summary_text(rd.neurons, top=10))
        doc.img(plot_layer_counts(rd.neurons, out / "neuron_layers.png"), "selected neurons per layer")
    else:
        doc.p("Neuron stage not finished.")
    doc.h(3, "Causal check")
    if rd.check:
        doc.pre(rd.check.get("verdict_text") or json.dumps(rd.check.get("summary", rd.check), indent=1)[:3000])
        if rd.check_png:  # copied next to the other plots, so the report folder stands on its own
            local = out / "causal_check.png"
            shutil.copyfile(rd.check_png, local)
            doc.img(local, "ablation of the selected neurons vs random neurons of the same per-layer counts")
    else:
        doc.p("Not run (add a `check:` section to the run config) or not finished.")

    # config, stages
    doc.h(2, "Configuration")
    doc.pre(yaml.safe_dump(rd.config, sort_keys=False))
    doc.h(2, "Stages")
    doc.table(["stage", "folder", "status", "time (s)"],
              [[s["name"], s["dir"], ("done" if s.get("finished") else "unfinished"), str(s.get("time_s", ""))]
               for s in rd.stages])

    md = out / "report.md"
    atomic_write_text(md, doc.markdown(out))
    page = out / "report.html"
    atomic_write_text(page, doc.html(f"yfpo report: {name}"))
    atomic_write_text(out / "comparison.json", json.dumps(comp, indent=2, default=str))
    return page

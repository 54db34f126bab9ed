"""`yfpo report RUN_DIR`: a run directory (run.json + stage folders) -> report.md + self-contained report.html.

The parts, each readable on its own: read.py reads the run's files in their documented schemas (run.json,
NeuronSet JSON, check.json, the pairs summary.json, the trainer's metrics.jsonl, eval summary.json +
items.jsonl, discrimination.json); compare.py computes the numbers (accuracies, intervals, paired tests;
statistics from yfpo.eval.stats); verdicts.py turns them into sentences; render.py turns blocks into Markdown
and HTML; plots.py draws the PNGs. This file writes one section per function and wires them together.
Stages that have not finished are shown as missing, so a partial run still gives a report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from yfpo.report.compare import _primary, comparison, label
from yfpo.report.read import RunData, read_run
from yfpo.report.render import Doc, pct
from yfpo.report.verdicts import verdicts
from yfpo.utils import atomic_write_text, now, remove_stale_tmp


def _cell(c: dict | None) -> str:
    if not c:
        return "—"
    s = f"{pct(c['acc'])} [{pct(c['lo'])}, {pct(c['hi'])}]"
    if c.get("seeds", 1) >= 2:
        s += f" seeds [{pct(c['seed_lo'])}, {pct(c['seed_hi'])}]"
    if "vs_ref" in c:
        s += f" p={c['vs_ref']['p']:.2g}"
    return s


def _plain(v) -> str:
    """A config value as a reader writes it: lists joined, None as 'none'."""
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v) or "none"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_plain(x)}" for k, x in v.items()) or "none"
    return str(v)


def _header(doc: Doc, rd: RunData) -> None:
    doc.h(1, f"yfpo run report: {rd.index.get('name', rd.dir.name)}")
    doc.p(
        f"Run directory {rd.dir} — report built {now()}. Model: {rd.config.get('model')}; seeds: "
        f"{rd.config.get('seeds')}; methods: {', '.join(rd.config.get('methods', {}) or [])}."
    )
    unfinished = [s["name"] for s in rd.stages if not s.get("finished")]
    if unfinished:
        doc.p("Unfinished stages (missing from the tables below): " + ", ".join(unfinished) + ".")


def _detectable(comp: dict) -> list[str]:
    """Per benchmark, the MDE of reference-vs-method at the run's items per seed and seeds (needs a reference row:
    DPO, or plain GRPO in a GRPO-only run)."""
    from yfpo.eval.power import mde

    ref = comp.get("reference")
    out = []
    for b in comp["benches"]:
        c = comp["table"].get(ref, {}).get(b) if ref else None
        if not c or c["n_per_seed"] < 2:
            continue
        n, seeds = c["n_per_seed"], c["seeds"]
        p_a = max(c["acc"], 1 / (2 * n))  # at 0 correct the rate is below 1/n, not 0
        d = mde(n, seeds, p_a, reps=200)
        what = "none at this size" if d is None else f"{100 * d:.1f} points"
        out.append(f"{b}: {what} (n = {n}, {seeds} seed{'s' if seeds > 1 else ''}, {label(ref)} {100 * c['acc']:.1f}%)")
    return out


def _comparison_section(doc: Doc, rd: RunData, comp: dict, out: Path) -> None:
    from yfpo.report.plots import accuracy_bars

    doc.h(2, "Did the neuron reward help?")
    doc.ul(verdicts(rd, comp))
    detectable = _detectable(comp)
    if detectable:
        ref = label(comp["reference"])
        doc.p(
            f"Smallest difference this design could detect (accuracy points over {ref}, two-sided alpha 0.05, power "
            f"0.8; yfpo.eval.power: {ref}'s accuracy as the baseline, churn 0.21 measured on docs/results/cpu_result, "
            "rho 0.5 assumed): " + "; ".join(detectable) + ". A non-significant difference smaller than this is "
            "not evidence of no effect."
        )
    doc.h(2, "Comparison")
    gen = [e for e in rd.evals.values() if _primary(e["summary"]) != "letter"]  # not MMLU's letter scoring
    ex = next(iter(gen or rd.evals.values()), None)
    prim = _primary(ex["summary"]) if ex else "flexible"
    doc.p(
        f"Accuracy (%) with the `{prim}` extractor: mean over seeds [Wilson 95% CI over the items, each item "
        "counted once]; with 2+ seeds also the t 95% CI over seeds; "
        + (
            f"p = exact test against {label(comp['reference'])} on paired items "
            if comp.get("reference")
            else "p: none (the run has no reference method: DPO or a plain GRPO method) "
        )
        + "(McNemar's with one seed; with several, an exact sign-flip test on each item's mean difference over "
        "seeds, so an item counts once). mmlu_* (retention, when run): MMLU multiple choice scored by the "
        "answer letter's log-probability, no generation. Discrimination: how often the model gives the correct solution of a "
        "held-out (correct, incorrect) pair the higher length-normalised log-likelihood."
    )
    header = ["method", "seeds"]
    for b in comp["benches"]:
        ns = {c["n_per_seed"] for m in comp["methods"] if (c := comp["table"][m].get(b))}
        header.append(f"{b} (n={'/'.join(str(x) for x in sorted(ns))})")
    header.append("pair discrimination")
    rows = []
    for m in comp["methods"]:
        cells = [comp["table"][m].get(b) for b in comp["benches"]]
        d = comp["discrimination"].get(m)
        seeds = max([c["seeds"] for c in cells if c] + [d["seeds"] if d else 0])
        rows.append(
            [label(m), str(seeds)]
            + [_cell(c) for c in cells]
            + [f"{pct(d['acc'])} [{pct(d['lo'])}, {pct(d['hi'])}] (n={d['n']})" if d else "—"]
        )
    if not rows:
        doc.p("No evaluation has finished yet.")
        return
    doc.table(header, rows)
    png = accuracy_bars({label(m): comp["table"][m] for m in comp["methods"]}, comp["benches"], out / "accuracy.png")
    if png:
        doc.img(png, "accuracy per method and benchmark (error bars: Wilson 95% CI over items)")
    proto = ex["summary"].get("protocol", {})
    doc.p(
        "Evaluation protocol: "
        + "; ".join(f"{k} = {_plain(v)}" for k, v in proto.items() if k != "template")
        + (f"; template: {proto.get('template')}" if proto.get("template") else "")
        + "."
    )


def _training_section(doc: Doc, rd: RunData, out: Path) -> None:
    from yfpo.report.plots import training_curves

    doc.h(2, "Training")
    if not rd.metrics:
        doc.p("No training metrics yet.")
        return
    png = training_curves(rd.metrics, out / "training_curves.png")
    if png:
        doc.img(png, "training curves: loss, DPO reward margin, neuron margin, accuracies")
    keys = ["loss", "rewards/margins", "rewards/accuracies", "neuron/margin", "neuron/accuracy"]
    grpo_keys = ["rewards/accuracy/mean", "rewards/neuron/mean", "step_time"]  # GRPO methods (trainer: grpo)
    keys += [k for k in grpo_keys if any(k in r for rows_ in rd.metrics.values() for r in rows_)]
    rows = []
    for run, mrows in rd.metrics.items():
        tail = mrows[-max(1, len(mrows) // 10) :]
        vals = []
        for k in keys:
            xs = [r[k] for r in tail if r.get(k) is not None]
            vals.append(f"{sum(xs) / len(xs):.3f}" if xs else "—")
        rows.append([run, str(mrows[-1].get("step", len(mrows)))] + vals)
    doc.p("Last logged values (mean over the final tenth of the logged steps):")
    doc.table(["run", "steps"] + keys, rows)
    _grpo_table(doc, rd)


def _grpo_table(doc: Doc, rd: RunData) -> None:
    """GRPO runs over all their steps: wall time per step, the accuracy reward, how often a group had a reward
    spread (the only steps with a learning signal from accuracy), completion length and truncation."""
    runs = {k: [r for r in v if "step_time" in r] for k, v in rd.metrics.items()}
    runs = {k: v for k, v in runs.items() if v and any("rewards/accuracy/mean" in r for r in v)}
    if not runs:
        return

    def mean(rows, key, f=lambda x: x):
        xs = [f(r[key]) for r in rows if r.get(key) is not None]
        return sum(xs) / len(xs) if xs else None

    def fmt(x, spec=".3f"):
        return "—" if x is None else format(x, spec)

    table = []
    for run, rows in runs.items():
        times = [r["step_time"] for r in rows]
        spread = mean(rows, "frac_reward_zero_std", lambda x: 1.0 - x)
        table.append(
            [
                run,
                str(len(rows)),
                f"{sum(times) / len(times):.1f}",
                f"{min(times):.1f}-{max(times):.1f}",
                f"{sum(times) / 60:.1f}",
                fmt(mean(rows, "rewards/accuracy/mean")),
                fmt(None if spread is None else 100 * spread, ".0f"),
                fmt(mean(rows, "completions/mean_length"), ".1f"),
                fmt(None if (c := mean(rows, "completions/clipped_ratio")) is None else 100 * c, ".0f"),
                fmt(mean(rows, "neuron/phi"), ".4f"),
                fmt(mean(rows, "neuron/loss_term")),
            ]
        )
    doc.p(
        "GRPO runs, over all logged steps (TRL's `step_time`: the wall time of one optimizer step, generation "
        "included):"
    )
    doc.table(
        [
            "run",
            "steps",
            "s / step (mean)",
            "s / step (range)",
            "train min (sum of steps)",
            "accuracy reward (mean)",
            "% steps with a reward spread",
            "completion tokens (mean)",
            "% truncated",
            "neuron phi (mean)",
            "neuron loss term (mean)",
        ],
        table,
    )


def _counts(d: dict | None, noun: str = "") -> str:
    """{'truncated': 2, 'no_answer': 1} -> '2 truncated, 1 no answer'."""
    if not d:
        return "none"
    return ", ".join(f"{v} {str(k).replace('_', ' ')}{noun}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def _pairs_section(doc: Doc, rd: RunData) -> None:
    doc.h(2, "Preference pairs")
    if not rd.pairs:
        methods = (rd.config.get("methods") or {}).values()
        grpo_only = bool(methods) and all((k or {}).get("trainer") == "grpo" for k in methods)
        doc.p(
            f"Pairs read from {rd.config['pairs_file']}."
            if rd.config.get("pairs_file")
            else "No preference pairs: every method is GRPO (online sampling on its own questions)."
            if grpo_only
            else "Pairs stage not finished."
        )
        return
    s = rd.pairs
    acc = s.get("sample_accuracy")
    doc.p(
        f"{s['questions']} questions from {s.get('bench')} were sampled {s['samples']} times in all; "
        f"{'the sample accuracy is not known' if acc is None else f'{pct(acc)}% of the samples were correct'}. "
        f"This gave {s['pairs']} pairs"
        + (f" and {s['step_pairs']} Step-DPO pairs" if s.get("step_pairs") else "")
        + "."
    )
    by_source = s.get("pairs_by_source") or {}
    if by_source:
        total = sum(by_source.values()) or 1
        doc.table(
            ["chosen answer comes from", "pairs", "share"],
            [[str(k), str(v), f"{pct(v / total)}%"] for k, v in sorted(by_source.items(), key=lambda kv: -kv[1])],
        )
    facts = [f"Dropped samples: {_counts(s.get('dropped'))}."]
    if s.get("questions_with_a_correct_sample") is not None:
        facts.append(
            f"{s['questions_with_a_correct_sample']} of {s['questions']} questions had at least one "
            f"correct sample; {s.get('questions_all_correct', 0)} had only correct samples (no "
            "self-generated pair)."
        )
    if s.get("truncated_samples"):
        facts.append(f"{s['truncated_samples']} samples hit the generation length limit.")
    doc.ul(facts)


def _neurons_section(doc: Doc, rd: RunData, out: Path) -> None:
    from yfpo.neurons.neuronset import NeuronSet
    from yfpo.neurons.show import plot_layer_counts

    doc.h(2, "Math neurons")
    if rd.neurons is None:
        doc.p("Neuron stage not finished.")
        return
    ns = NeuronSet.load(rd.neurons)
    p = ns.provenance
    n_layers, width = ns.shape
    doc.p(
        f"{len(ns)} neurons selected out of {n_layers} layers x {width} MLP neurons "
        f"({len(ns) / (n_layers * width):.2%}) of {p.get('model')} ({p.get('family')}), by {p.get('method')}"
        + (f", selection {p['selection']}" if p.get("selection") else "")
        + (f", k = {p['k']}" if p.get("k") is not None else "")
        + "."
    )
    corp = {k: v for k, v in (p.get("corpora") or {}).items() if v}
    if corp:
        doc.table(
            ["corpus", "name", "texts", "tokens"],
            [[k, str(v.get("name")), str(v.get("n")), str(v.get("tokens", "—"))] for k, v in corp.items()],
        )
    counts = ns.per_layer_counts()
    doc.p("Selected neurons per layer:")
    doc.table(["layer"] + [str(i) for i in range(len(counts))], [["neurons"] + [str(c) for c in counts]])
    doc.img(plot_layer_counts(rd.neurons, out / "neuron_layers.png"), "selected neurons per layer")
    order = ns.scores.abs().argsort(descending=True)[:10].tolist()
    doc.p(
        f"The {len(order)} neurons with the largest |score| (activation mean and std over the math corpus "
        "normalise the neuron margin):"
    )
    doc.table(
        ["rank", "layer", "index", "score", "act mean", "act std"],
        [
            [
                str(r),
                str(int(ns.layers[i])),
                str(int(ns.indices[i])),
                f"{float(ns.scores[i]):.3e}",
                f"{float(ns.mean[i]):.4f}",
                f"{float(ns.std[i]):.4f}",
            ]
            for r, i in enumerate(order, 1)
        ],
    )


def _check_section(doc: Doc, rd: RunData, out: Path) -> None:
    doc.h(3, "Causal check")
    if not rd.check:
        doc.p("Not run (add a `check:` section to the run config) or not finished.")
        return
    summary = rd.check.get("summary")
    if isinstance(summary, dict) and all(isinstance(v, dict) and "math_nll" in v for v in summary.values()):
        doc.p(
            f"Ablation ({rd.check.get('ablation')}) of the {rd.check.get('n_neurons')} selected neurons against "
            "random neurons of the same per-layer counts: NLL in nats/token on math and contrast texts, and the "
            "change from no ablation."
        )
        doc.table(
            ["condition", "math NLL", "Δ math", "contrast NLL", "Δ contrast"]
            + (["accuracy"] if any("accuracy" in v for v in summary.values()) else []),
            [
                [
                    name,
                    f"{v['math_nll']:.4f}",
                    f"{v['delta_math_nll'][0]:+.4f}",
                    f"{v['contrast_nll']:.4f}",
                    f"{v['delta_contrast_nll'][0]:+.4f}",
                ]
                + ([f"{v['accuracy']:.3f}"] if "accuracy" in v else [])
                for name, v in summary.items()
            ],
        )
        tail = [ln.strip() for ln in (rd.check.get("verdict_text") or "").splitlines() if ln.strip().startswith("math")]
        if tail:
            doc.ul(tail)
    else:
        doc.pre(rd.check.get("verdict_text") or json.dumps(rd.check.get("summary", rd.check), indent=1)[:3000])
    if rd.check_png:  # copied next to the other plots, so the report folder stands on its own
        local = out / "causal_check.png"
        shutil.copyfile(rd.check_png, local)
        doc.img(local, "ablation of the selected neurons vs random neurons of the same per-layer counts")


def _eval_details_section(doc: Doc, rd: RunData) -> None:
    """Per-group accuracy (task specs with a group field), sampled metrics, no-answer items and answer length
    beside the protocol: the tables of report/eval_sections.py, for every evaluated model x benchmark."""
    from yfpo.report import eval_sections as es

    summaries = {
        (f"{m}-s{s} / {b}" if s is not None else f"{m} / {b}"): e["summary"]
        for (m, s, b), e in sorted(
            rd.evals.items(), key=lambda kv: (kv[0][0] != "base", str(kv[0][0]), str(kv[0][1]), kv[0][2])
        )
    }
    tables = [
        (
            "Sampled metrics",
            "avg@n is the mean accuracy over the n samples; pass@k (unbiased estimator) and maj@k "
            "(majority vote over k samples, ties broken by the earliest first occurrence) with 95% CIs (bootstrap over "
            "items; maj@k: Wilson).",
            es.sampled_table(summaries),
        ),
        (
            "Accuracy per group",
            "Items grouped by the task spec's group field (e.g. GSM-Plus perturbation_type).",
            es.group_table(summaries),
        ),
        (
            "Items without an answer",
            "Task specs that allow a 'no answer' gold: the model is right on those only when it says there is none.",
            es.no_answer_table(summaries),
        ),
        (
            "Answer length",
            "Mean generated tokens per answer, beside the prompting protocol and decoding.",
            es.length_table(summaries),
        ),
    ]
    tables = [t for t in tables if t[2] is not None]
    if not tables:
        return
    doc.h(2, "Evaluation details")
    for title, text, table in tables:
        doc.h(3, title)
        doc.p(text)
        doc.table(*table)


def _config_section(doc: Doc, rd: RunData) -> None:
    import yaml

    doc.h(2, "Configuration")
    doc.pre(yaml.safe_dump(rd.config, sort_keys=False))
    doc.h(2, "Stages")
    doc.table(
        ["stage", "folder", "status", "time (s)"],
        [
            [s["name"], s["dir"], ("done" if s.get("finished") else "unfinished"), str(s.get("time_s", ""))]
            for s in rd.stages
        ],
    )


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.md, report.html (PNGs inlined) and the PNGs to out_dir (default RUN_DIR/report);
    returns the path of report.html."""
    rd = read_run(run_dir)
    out = Path(out_dir) if out_dir else rd.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)  # a report killed mid-write left temp files
    comp = comparison(rd)
    doc = Doc()
    _header(doc, rd)
    _comparison_section(doc, rd, comp, out)
    _eval_details_section(doc, rd)
    _training_section(doc, rd, out)
    _pairs_section(doc, rd)
    _neurons_section(doc, rd, out)
    _check_section(doc, rd, out)
    _config_section(doc, rd)
    atomic_write_text(out / "report.md", doc.markdown(out))
    page = out / "report.html"
    atomic_write_text(page, doc.html(f"yfpo report: {rd.index.get('name', rd.dir.name)}"))
    atomic_write_text(out / "comparison.json", json.dumps(comp, indent=2, default=str))
    return page

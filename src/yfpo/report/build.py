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

import yaml

from yfpo.eval.power import CHURN, RHO
from yfpo.report.compare import _primary, comparison, label
from yfpo.report.plots import CHANCE, accuracy_panels, method_colours, training_curves
from yfpo.report.read import RunData, read_run
from yfpo.report.render import Doc, pct, signed
from yfpo.report.verdicts import ALPHA, UNDERPOWERED_ABOVE, counts, verdict_rows, verdict_summary, verdicts
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


def _short_path(v):
    """Config values as the report shows them: an absolute path (of the machine that ran it) as its last two parts,
    '.../runs/quick'; dicts and lists walked."""
    if isinstance(v, dict):
        return {k: _short_path(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_short_path(x) for x in v]
    if isinstance(v, str) and v.startswith("/") and "\n" not in v and " " not in v:
        parts = Path(v).parts
        return ".../" + "/".join(parts[-2:]) if len(parts) > 3 else v
    return v


def _header(doc: Doc, rd: RunData) -> None:
    name = rd.index.get("name", rd.dir.name)
    doc.h(1, f"yfpo run report: {name}")
    methods = sorted((rd.config.get("methods") or {}), key=lambda m: (label(m).lower(), m))
    doc.p(
        f"Run `{name}`, report built {now()}. Model: {_short_path(rd.config.get('model'))}; seeds: "
        f"{_plain(rd.config.get('seeds'))}; methods: {', '.join(label(m) for m in methods) or 'none'}."
    )
    if rd.index.get("note"):
        doc.p(rd.index["note"])
    unfinished = [s["name"] for s in rd.stages if not s.get("finished") and s.get("kept", True)]
    if unfinished:
        doc.p("Unfinished stages (missing from the tables below): " + ", ".join(unfinished) + ".")


def _verdict_section(doc: Doc, rd: RunData, comp: dict) -> None:
    doc.h(2, "Verdict")
    rows = verdict_rows(rd, comp)
    if not rows:
        doc.p(
            "No method with the neuron reward was evaluated on the same items as its twin without it, a control "
            "or the base model, so this run gives no verdict."
        )
        return
    doc.table(
        [
            "benchmark",
            "comparison",
            "accuracy %",
            "difference, points [95% CI]",
            "p (exact)",
            "smallest detectable, points",
            "verdict",
        ],
        [
            [
                r["bench"],
                f"{label(r['a'])} vs {label(r['b'])}",
                f"{pct(r['test']['acc_a'])} vs {pct(r['test']['acc_b'])}",
                f"{signed(r['test']['acc_a'] - r['test']['acc_b'])} "
                f"[{signed(r['test']['diff_lo'])}, {signed(r['test']['diff_hi'])}]",
                f"{r['test']['p']:.2g}",
                "none at this size" if r["mde"] is None else f"{100 * r['mde']:.1f}",
                f"**{r['word']}**" if r["word"] in ("better", "worse") else r["word"],
            ]
            for r in sorted(rows, key=lambda r: (comp["benches"].index(r["bench"]), 0))
        ],
    )
    doc.p(" ".join(verdict_summary(rows)))
    t0 = rows[0]["test"]
    doc.p(
        f"Each row pairs the two methods item by item ({counts(t0)} in the first row). p: McNemar's exact test with "
        "one seed; with several, an exact sign-flip test on each item's mean difference over the seeds, so an item "
        "counts once. CI: Newcombe's hybrid score 95% interval over items (each item's mean over the seeds; never zero "
        "width while items are few). Smallest detectable: the difference this design detects with "
        f"power 0.8 at alpha {ALPHA} (`yfpo.eval.power`, the second method's accuracy as the baseline, churn "
        f"{CHURN:.2f}, rho {RHO} assumed). Verdict: better / worse when p < {ALPHA}; otherwise **underpowered** when "
        f"the smallest detectable difference is over {100 * UNDERPOWERED_ABOVE:.0f} points, else **no detectable "
        "difference**."
    )


def _comparison_section(doc: Doc, rd: RunData, comp: dict, out: Path) -> None:
    doc.h(2, "Accuracy")
    gen = [e for e in rd.evals.values() if _primary(e["summary"]) != "letter"]  # not MMLU's letter scoring
    ex = next(iter(gen or rd.evals.values()), None)
    prim = _primary(ex["summary"]) if ex else "flexible"
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
    doc.p(
        f"Accuracy (%) with the `{prim}` extractor: mean over seeds [Wilson 95% CI over the items, each item "
        "counted once]; with 2+ seeds also the t 95% CI over seeds (clipped to [0, 100]); "
        + (
            f"p = exact test against {label(comp['reference'])} on paired items (as in the verdict). "
            if comp.get("reference")
            else "no p: the run has no reference method (DPO or a plain GRPO method). "
        )
        + "mmlu_* (retention, when run): MMLU multiple choice scored by the answer letter's log-probability, no "
        "generation. Discrimination: how often the model gives the correct solution of a held-out (correct, "
        "incorrect) pair the higher length-normalised log-likelihood."
    )
    doc.table(header, rows)
    panels = {
        label(m): comp["table"][m]
        | ({"pair discrimination": comp["discrimination"][m]} if m in comp["discrimination"] else {})
        for m in comp["methods"]
    }
    extra = ["pair discrimination"] if comp["discrimination"] else []
    colours = method_colours(comp["methods"])
    png = accuracy_panels(
        panels, comp["benches"] + extra, out / "accuracy.png", CHANCE, {label(m): c for m, c in colours.items()}
    )
    if png:
        doc.img(
            png,
            "accuracy per benchmark (one panel each, own scale; bars: mean over seeds, whiskers: Wilson 95% CI over "
            "items; dashed: chance)",
        )
    _truncation_table(doc, comp, prim)
    _protocol_table(doc, ex["summary"].get("protocol", {}) if ex else {})


def _truncation_table(doc: Doc, comp: dict, prim: str) -> None:
    """Per method x benchmark: the share of outputs cut off at the token limit, and the accuracy with those
    outputs counted wrong beside the extractor's own (a cut-off output's last number can match the gold by
    accident: the flexible extractor takes it)."""
    benches = [
        b for b in comp["benches"] if any("truncated_rate" in comp["table"][m].get(b, {}) for m in comp["methods"])
    ]
    if not benches:
        return
    rows = []
    for m in comp["methods"]:
        cells = []
        for b in benches:
            c = comp["table"][m].get(b)
            cells.append(
                f"{pct(c['truncated_rate'])}% cut; {pct(c['acc'])} → {pct(c['acc_if_truncated_wrong'])}"
                if c and "truncated_rate" in c
                else "—"
            )
        rows.append([label(m)] + cells)
    doc.p(
        f"Outputs that hit the token limit, mean over seeds: the share cut off, and the `{prim}` accuracy (%) as "
        "graded → with every cut-off output counted wrong (an output cut off mid-solution can end on a number "
        "copied from the question that happens to be the answer; the first number is the lm-eval-compatible "
        "one, the second credits no such accident):"
    )
    doc.table(["method"] + benches, rows)


def _protocol_table(doc: Doc, proto: dict) -> None:
    if not proto:
        return
    rows = [[str(k).replace("_", " "), _plain(v)] for k, v in proto.items() if k != "template"]
    if proto.get("template"):
        rows.append(["template", str(proto["template"])])
    doc.p("Evaluation protocol (the same for every model):")
    doc.table(["setting", "value"], rows)


def _comparisons_in_words(doc: Doc, rd: RunData, comp: dict) -> None:
    doc.h(2, "Each comparison in words")
    doc.ul(verdicts(rd, comp))


def _run_order(run: str, methods: list[str]) -> tuple:
    """'yfpo_random-s2' -> the report's method order (that of the accuracy table), then seed as a number."""
    method, _, seed = run.rpartition("-s")
    return (methods.index(method) if method in methods else len(methods), method, int(seed) if seed.isdigit() else -1)


def _training_section(doc: Doc, rd: RunData, comp: dict, out: Path) -> None:
    doc.h(2, "Training")
    if not rd.metrics:
        doc.p("No training metrics yet.")
        return
    order = list(dict.fromkeys(comp["methods"] + sorted(rd.config.get("methods") or {})))
    metrics = {k: rd.metrics[k] for k in sorted(rd.metrics, key=lambda r: _run_order(r, order))}
    png = training_curves(
        metrics, out / "training_curves.png", labels={m: label(m) for m in order}, colours=method_colours(order)
    )
    if png:
        doc.img(
            png, "training curves: one colour per method (with several seeds: thin lines the seeds, thick their mean)"
        )
    keys = ["loss", "rewards/margins", "rewards/accuracies", "neuron/margin", "neuron/accuracy"]
    grpo_keys = ["rewards/accuracy/mean", "rewards/neuron/mean", "step_time"]  # GRPO methods (trainer: grpo)
    keys += [k for k in grpo_keys if any(k in r for rows_ in rd.metrics.values() for r in rows_)]
    rows = []
    for run, mrows in metrics.items():
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
            f"Pairs read from {_short_path(rd.config['pairs_file'])}."
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
        doc.p("No NeuronSet in the run folder (the neuron stage has not finished, or its output was not kept).")
        return
    ns = NeuronSet.load(rd.neurons)
    p = ns.provenance
    n_layers, width = ns.shape
    doc.p(
        f"{len(ns)} neurons selected out of {n_layers} layers x {width} MLP neurons "
        f"({len(ns) / (n_layers * width):.2%}) of {_short_path(p.get('model'))} ({p.get('family')}), by {p.get('method')}"
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


FOLD_ROWS = 20  # longer detail tables sit behind a <details>


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
        if len(table[1]) > FOLD_ROWS:  # one row per model x benchmark: a long table is there to look things up
            doc.details(f"the table ({len(table[1])} rows)", lambda d, t=table: d.table(*t))
        else:
            doc.table(*table)


def _stage_kind(s: dict) -> str:
    return str(s.get("kind") or str(s.get("name", "?")).split("/")[0])


def _config_section(doc: Doc, rd: RunData) -> None:
    doc.h(2, "Configuration")
    doc.details(
        "the run configuration (YAML)", lambda d: d.pre(yaml.safe_dump(_short_path(rd.config), sort_keys=False))
    )
    doc.h(2, "Stages")
    if not rd.stages:
        doc.p("No stages recorded.")
        return
    kinds: dict[str, list[dict]] = {}
    for s in rd.stages:
        kinds.setdefault(_stage_kind(s), []).append(s)

    def secs(x) -> str:
        return "—" if x is None else f"{x:.0f}" if x >= 10 else f"{x:.1f}"

    rows = []
    for kind, ss in kinds.items():
        times = [float(s["time_s"]) for s in ss if isinstance(s.get("time_s"), (int, float))]
        done = sum(1 for s in ss if s.get("finished") or not s.get("kept", True))
        rows.append(
            [
                kind,
                str(len(ss)),
                str(done),
                secs(sum(times)) if times else "—",
                secs(max(times)) if times else "—",
            ]
        )
    doc.p("One row per kind of stage (times: wall seconds of the stage's last run, where recorded):")
    doc.table(["stage kind", "stages", "finished", "total time (s)", "longest (s)"], rows)
    doc.details(
        f"all {len(rd.stages)} stages",
        lambda d: d.table(
            ["stage", "folder", "status", "time (s)"],
            [
                [
                    s["name"],
                    s["dir"],
                    (
                        "done"
                        if s.get("finished")
                        else "done, outputs not kept"
                        if not s.get("kept", True)
                        else "unfinished"
                    ),
                    secs(s["time_s"]) if isinstance(s.get("time_s"), (int, float)) else "—",
                ]
                for s in rd.stages
            ],
        ),
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
    _verdict_section(doc, rd, comp)
    _comparison_section(doc, rd, comp, out)
    _comparisons_in_words(doc, rd, comp)
    _eval_details_section(doc, rd)
    _training_section(doc, rd, comp, out)
    _pairs_section(doc, rd)
    _neurons_section(doc, rd, out)
    _check_section(doc, rd, out)
    _config_section(doc, rd)
    atomic_write_text(out / "report.md", doc.markdown(out))
    page = out / "report.html"
    atomic_write_text(page, doc.html(f"yfpo report: {rd.index.get('name', rd.dir.name)}"))
    atomic_write_text(out / "comparison.json", json.dumps(comp, indent=2, default=str))
    return page

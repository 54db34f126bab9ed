"""Report sections for the richer eval outputs. Pure functions: eval summaries in, table (header, rows) out.

Each `*_table` returns `(header, rows)` of strings, the shape `Doc.table(header, rows)` in report/build.py
takes (it renders both Markdown and HTML), or None when the summaries have nothing for that section:
  group_table       per-group accuracy (task specs with a group field, e.g. GSM-Plus perturbation_type)
  sampled_table     avg@n, pass@k and maj@k with CIs (runs with --samples)
  no_answer_table   answerable vs "no answer" items (answer_kind none-allowed)
  length_table      accuracy beside mean answer length (tokens) and the prompting protocol
  robustness_table  `yfpo robustness` summaries: attack success rate, accuracy before/after, queries, length change
`markdown_table` renders one for callers without a Doc.
"""

from __future__ import annotations


def _ci(a: dict) -> str:
    v = a.get("acc", a.get("mean", 0.0))
    return f"{100 * v:.1f} [{100 * a['lo']:.1f}, {100 * a['hi']:.1f}]"


def _prim(s: dict) -> str:
    return s.get("primary") or "flexible"


def group_table(summaries: dict[str, dict]) -> tuple[list[str], list[list[str]]] | None:
    """summaries: label (e.g. 'dpo / gsm_plus') -> eval summary. One row per (label, group)."""
    rows = []
    for label, s in summaries.items():
        for g, accs in (s.get("by_group") or {}).items():
            a = accs[_prim(s)]
            rows.append([label, g, str(a["n"]), _ci(a)])
    return (["run", "group", "n", "accuracy % (95% CI)"], rows) if rows else None


def sampled_table(summaries: dict[str, dict]) -> tuple[list[str], list[list[str]]] | None:
    rows, ks_all = [], []
    for s in summaries.values():
        if "sampled" in s:
            ks_all = sorted(set(ks_all) | set(s["sampled"]["ks"]))
    if not ks_all:
        return None
    header = ["run", "n", "samples", "avg@n %"] + [f"pass@{k} %" for k in ks_all] + [f"maj@{k} %" for k in ks_all]
    for label, s in summaries.items():
        if "sampled" not in s:
            continue
        d = s["sampled"]["by_extractor"][_prim(s)]
        row = [label, str(s["n"]), str(s["sampled"]["n_samples"]), _ci(d["avg"])]
        row += [_ci(d["pass"][str(k)]) if str(k) in d["pass"] else "-" for k in ks_all]
        row += [_ci(d["maj"][str(k)]) if str(k) in d["maj"] else "-" for k in ks_all]
        rows.append(row)
    return header, rows


def no_answer_table(summaries: dict[str, dict]) -> tuple[list[str], list[list[str]]] | None:
    rows = []
    for label, s in summaries.items():
        if "no_answer" in s:
            p = _prim(s)
            rows.append(
                [
                    label,
                    str(s["answerable"][p]["n"]),
                    _ci(s["answerable"][p]),
                    str(s["no_answer"][p]["n"]),
                    _ci(s["no_answer"][p]),
                    str(s.get("conflicted", "—")),
                ]
            )
    header = [
        "run",
        "answerable n",
        "answerable acc %",
        "no-answer n",
        "no-answer graded correct % (says unanswerable)",
        "answered and abstained (graded neither)",
    ]
    return (header, rows) if rows else None


def length_table(summaries: dict[str, dict]) -> tuple[list[str], list[list[str]]] | None:
    rows = []
    for label, s in summaries.items():
        al = s.get("answer_length")
        if not al:
            continue
        p = _prim(s)
        mc = al.get("mean_tokens_correct")
        rows.append(
            [
                label,
                (s.get("protocol") or {}).get("template", "-"),
                (s.get("protocol") or {}).get("decoding", "-"),
                _ci(s["accuracy"][p]),
                f"{al['mean_tokens']:.1f}",
                f"{mc:.1f}" if mc is not None else "-",
            ]
        )
    header = ["run", "protocol", "decoding", "accuracy % (95% CI)", "mean answer tokens", "mean tokens (correct)"]
    return (header, rows) if rows else None


def robustness_table(summaries: dict[str, dict]) -> tuple[list[str], list[list[str]]] | None:
    rows = []
    for label, s in summaries.items():
        lc = s.get("length_change_success")
        rows.append(
            [
                label,
                str(s["pool"]),
                f"{100 * s['pool_accuracy']:.1f}",
                str(s["attacked"]),
                f"{100 * s['attack_success_rate']:.1f}",
                f"{100 * s['accuracy_before']:.1f} -> {100 * s['accuracy_after']:.1f}",
                f"{s['queries_mean']:.1f}",
                f"{lc:+.1f}" if lc is not None else "-",
            ]
        )
    header = [
        "run",
        "pool",
        "pool acc %",
        "attacked",
        "attack success %",
        "acc % before -> after",
        "queries / item",
        "answer-length change (tokens, successful)",
    ]
    return (header, rows) if rows else None


def markdown_table(table: tuple[list[str], list[list[str]]] | None) -> str:
    if table is None:
        return ""
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"

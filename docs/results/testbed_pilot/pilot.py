#!/usr/bin/env python
"""The testbed pilot (issue 33, item 5): on-policy pairs from the default model on the word-problem split's train
part, DPO / RPO LoRA trainings, every model evaluated greedy on the VALIDATION part only (never the test part).

Runs the `yfpo` CLI unit by unit (eval, pairs build, train), each in its own folder under RUN (default
/root/runs/testbed/pilot), one process with one thread. Every unit resumes from what it left on disk (the CLI's
own resume: finished eval items, finished pair questions, training checkpoints), and a finished unit is skipped, so
rerunning this script after a stop continues where it was:

    OMP_NUM_THREADS=1 PYTHONPATH=<a frozen copy of src> python <a copy of this file> [--run RUN]
        [--results docs/results/testbed_pilot] [--only NAME,...] [--table] [--smoke]

After each unit the small outputs (eval items without prompts, summaries, pairs, training metrics) are copied to
docs/results/testbed_pilot/<unit>/ beside this file and the pilot table (README's "Pilot table" section between
its markers) is rewritten from everything finished so far. --table only rewrites the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VAL, TRAIN = "wordprob_val", "wordprob_train"
EVAL = ["--max-new-tokens", "256", "--batch-size", "16"]
# training shared by every setting: LoRA on the default model, batch 4, one epoch over the round's pairs
TRAIN_BASE = {"lora": "true", "batch_size": "4", "epochs": "1", "save_steps": "10", "beta": "0.1", "seed": "0"}
RPO = {"loss_type": "sigmoid,sft", "trl": "{loss_weights: [1.0, 1.0]}"}
DPO = {"loss_type": "sigmoid"}

# the units, in the order they run (cheapest information first); a train unit names its pairs unit
UNITS: list[dict] = [
    {"name": "base", "kind": "eval", "model": "default"},
    {
        "name": "pairs-k8-t07-q320",
        "kind": "pairs",
        "args": {
            "mode": "onpolicy",
            "bench": TRAIN,
            "limit": "320",
            "k": "8",
            "temperature": "0.7",
            "top_p": "1.0",
            "max_new_tokens": "256",
            "batch_size": "256",
            "max_pairs_per_question": "2",
            "seed": "0",
        },
    },
    # the first 320 questions gave few in-zone questions (4 of the first 32: 0 < correct < 8), so the next 680
    # questions are sampled too (the same per-question seeds: as if one unit of 1000), trained on together below
    {
        "name": "pairs-k8-t07-q320-1000",
        "kind": "pairs",
        "args": {
            "mode": "onpolicy",
            "bench": TRAIN,
            "offset": "320",
            "limit": "680",
            "k": "8",
            "temperature": "0.7",
            "top_p": "1.0",
            "max_new_tokens": "256",
            "batch_size": "256",
            "max_pairs_per_question": "2",
            "seed": "0",
        },
    },
    {"name": "rpo-lr1e-4", "kind": "train", "pairs": "pairs-k8-t07-q320", "args": {**RPO, "lr": "1e-4"}},
    {
        "name": "rpo-lr1e-4-q1000",
        "kind": "train",
        "pairs": ["pairs-k8-t07-q320", "pairs-k8-t07-q320-1000"],
        "args": {**RPO, "lr": "1e-4"},
    },
    {
        "name": "dpo-lr1e-4-q1000",
        "kind": "train",
        "pairs": ["pairs-k8-t07-q320", "pairs-k8-t07-q320-1000"],
        "args": {**DPO, "lr": "1e-4"},
    },
    {"name": "dpo-lr1e-4", "kind": "train", "pairs": "pairs-k8-t07-q320", "args": {**DPO, "lr": "1e-4"}},
    {"name": "rpo-lr3e-4", "kind": "train", "pairs": "pairs-k8-t07-q320", "args": {**RPO, "lr": "3e-4"}},
    {"name": "dpo-lr3e-4", "kind": "train", "pairs": "pairs-k8-t07-q320", "args": {**DPO, "lr": "3e-4"}},
]


def log(run: Path, msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} {msg}"
    print(line, flush=True)
    with open(run / "pilot.log", "a") as f:
        f.write(line + "\n")


def sh(run: Path, cmd: list[str], name: str) -> float:
    log(run, f"{name}: {' '.join(cmd)}")
    t0 = time.time()
    with open(run / f"{name}.log", "a") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        log(run, f"{name}: FAILED rc={rc} (see {run / (name + '.log')})")
        raise SystemExit(rc)
    dt = time.time() - t0
    log(run, f"{name}: done in {dt:.0f} s")
    return dt


def yfpo() -> list[str]:
    return [sys.executable, "-m", "yfpo.cli"]


def eval_dir(run: Path, name: str) -> Path:
    return run / "eval" / name


def train_dir(run: Path, name: str) -> Path:
    return run / "train" / name


def run_unit(run: Path, u: dict) -> None:
    name, kind = u["name"], u["kind"]
    if kind == "eval":
        model = u["model"]
        out = eval_dir(run, name)
        if not (out / VAL / "summary.json").exists():
            sh(run, [*yfpo(), "eval", "--model", model, "--bench", VAL, "--out", str(out), *EVAL], f"eval-{name}")
        copy_eval(out / VAL, HERE / name / "eval" / VAL)
    elif kind == "pairs":
        out = run / "pairs" / name
        if not (out / "summary.json").exists():
            args = [f"--{k}={v}" for k, v in u["args"].items()]
            sh(run, [*yfpo(), "pairs", "build", "--out_dir", str(out), *args], f"pairs-{name}")
        dst = HERE / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("summary.json", "pairs.jsonl", "config.yaml"):
            if (out / f).exists():
                shutil.copy2(out / f, dst / f)
    elif kind == "train":
        out = train_dir(run, name)
        pairs = pairs_file(run, u["pairs"])
        if not (out / "final").exists():
            args = [f"--{k}={v}" for k, v in {**TRAIN_BASE, **u["args"]}.items()]
            sh(run, [*yfpo(), "train", "--out", str(out), "--pairs", str(pairs), *args], f"train-{name}")
        dst = HERE / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("metrics.jsonl", "config.yaml", "train_done.json"):
            if (out / f).exists():
                shutil.copy2(out / f, dst / f)
        ev = eval_dir(run, name)
        if not (ev / VAL / "summary.json").exists():
            sh(
                run,
                [*yfpo(), "eval", "--model", str(out / "final"), "--bench", VAL, "--out", str(ev), *EVAL],
                f"eval-{name}",
            )
        copy_eval(ev / VAL, HERE / name / "eval" / VAL)
    else:
        raise ValueError(f"unit {name}: unknown kind {kind!r}")


def pairs_file(run: Path, names) -> Path:
    """The pairs JSONL of one pairs unit, or of several concatenated (in the given order) into RUN/pairs/<a+b>.jsonl."""
    if isinstance(names, str):
        return run / "pairs" / names / "pairs.jsonl"
    out = run / "pairs" / ("+".join(names) + ".jsonl")
    missing = [n for n in names if not (run / "pairs" / n / "summary.json").exists()]
    if missing:
        raise SystemExit(f"pairs unit(s) {', '.join(missing)} not finished: run them first")
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join((run / "pairs" / n / "pairs.jsonl").read_text() for n in names))
        tmp.rename(out)
    return out


def copy_eval(src: Path, dst: Path) -> None:
    """summary.json as is; items.jsonl without the prompts (the protocol in the summary rebuilds them)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "summary.json", dst / "summary.json")
    rows = [json.loads(line) for line in (src / "items.jsonl").read_text().splitlines() if line.strip()]
    with open(dst / "items.jsonl", "w") as f:
        for r in rows:
            r.pop("prompt", None)
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def table() -> str:
    """The pilot table from the copied outputs: val accuracy (primary extractor, Wilson 95% CI), n, generation and
    training time, and the paired comparison with the base model (difference with CI, discordant items, exact p)."""
    from yfpo.eval.bench import compare_items, load_items

    base_dir = HERE / "base" / "eval" / VAL
    if not (base_dir / "summary.json").exists():
        return "(no finished unit yet)\n"
    base = load_items(base_dir)
    lines = [
        "| setting | pairs | val accuracy (95% CI) | n | vs base: diff (95% CI) | base-only / new-only correct | exact p "
        "| train s | eval s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for u in UNITS:
        if u["kind"] == "pairs":
            continue
        d = HERE / u["name"] / "eval" / VAL
        if not (d / "summary.json").exists():
            continue
        s = json.loads((d / "summary.json").read_text())
        e = s["primary"]
        acc = s["accuracy"][e]
        train_s = ""
        pairs = ""
        if u["kind"] == "train":
            metrics = HERE / u["name"] / "metrics.jsonl"
            rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
            rt = [r["train_runtime"] for r in rows if "train_runtime" in r]
            train_s = f"{rt[-1]:.0f}" if rt else ""
            names = [u["pairs"]] if isinstance(u["pairs"], str) else u["pairs"]
            n_pairs = sum(json.loads((HERE / n / "summary.json").read_text())["pairs"] for n in names)
            pairs = f"{' + '.join(names)} ({n_pairs})"
            setting = f"{u['name']} ({', '.join(f'{k}={v}' for k, v in u['args'].items())})"
        else:
            setting = "base model"
        cmp = compare_items(base, load_items(d), n_boot=2000)["by_extractor"][e]
        vs = (
            ""
            if u["kind"] != "train"
            else (
                f"{100 * cmp['diff']:+.1f} ({100 * cmp['ci_lo']:+.1f}, {100 * cmp['ci_hi']:+.1f}) | {cmp['b10']} / "
                f"{cmp['b01']} | {cmp['mcnemar_p']:.3g}"
            )
        )
        if not vs:
            vs = " | | "
        lines.append(
            f"| {setting} | {pairs} | {100 * acc['acc']:.1f} ({100 * acc['lo']:.1f}, {100 * acc['hi']:.1f}) | "
            f"{acc['n']} | {vs} | {train_s} | {s.get('time_s', 0):.0f} |"
        )
    return "\n".join(lines) + f"\n\nextractor: {e}; validation split {VAL} only.\n"


def power_plan(reps: int = 400) -> str:
    """Smallest detectable difference (80% power, two-sided 0.05) for YFPO vs the best trained baseline on the test
    split (1000 items) and on validation (400), with 1 and 3 seeds, from the pilot's numbers: p_A = the baseline's
    val accuracy, churn = the share of its correct items another model of the pilot gets wrong (the largest such
    share over the finished trained settings vs the baseline, or vs the base model when only one is trained);
    rho (how alike an item's seeds are) is not measured here: 0.5 as in yfpo.eval.power, with 0 and 1 beside."""
    from yfpo.eval.bench import load_items
    from yfpo.eval.power import mde

    done = []
    for u in UNITS:
        d = HERE / u["name"] / "eval" / VAL
        if u["kind"] != "pairs" and (d / "summary.json").exists():
            s = json.loads((d / "summary.json").read_text())
            done.append((u["name"], s["accuracy"][s["primary"]]["acc"], load_items(d), s["primary"]))
    trained = [x for x in done if x[0] != "base"]
    if not trained:
        return "(no trained setting finished yet)\n"
    best = max(trained, key=lambda x: x[1])
    e = best[3]
    others = [x for x in done if x[0] != best[0]]

    def churn(a_rows, b_rows) -> float:
        b_by = {r["id"]: r for r in b_rows}
        right = [r for r in a_rows if r["correct"][e] and r["id"] in b_by]
        return sum(not b_by[r["id"]]["correct"][e] for r in right) / max(1, len(right))

    ch = max(churn(best[2], o[2]) for o in others)
    lines = [
        f"baseline {best[0]}: val accuracy p_A = {100 * best[1]:.1f}%; churn (its correct items lost by another "
        f"pilot model, largest) = {ch:.2f}",
        "",
        "| items | seeds | MDE (points), rho 0.5 | rho 0 | rho 1 |",
        "|---|---|---|---|---|",
    ]
    for n in (400, 1000):
        for seeds in (1, 3):
            vals = [mde(n, seeds, best[1], ch, rho, reps=reps) for rho in (0.5, 0.0, 1.0)]
            lines.append(
                f"| {n} | {seeds} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" for v in vals) + " |"
            )
    return "\n".join(lines) + "\n"


def _replace(text: str, tag: str, body: str) -> str:
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    if start in text and end in text:
        a, b = text.index(start) + len(start), text.index(end)
        text = text[:a] + "\n" + body + text[b:]
    return text


def write_table(power: bool = False) -> None:
    readme = HERE / "README.md"
    text = _replace(readme.read_text(), "pilot-table", table())
    if power:
        text = _replace(text, "power-plan", power_plan())
    readme.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="/root/runs/testbed/pilot")
    ap.add_argument("--only", default=None, help="comma-separated unit names")
    ap.add_argument("--table", action="store_true", help="only rewrite the README's pilot table")
    ap.add_argument("--power", action="store_true", help="with --table: also the power plan (a few minutes)")
    ap.add_argument("--results", default=None, help="where the small outputs and README go (default: beside this file)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a check of the wiring, minutes)")
    a = ap.parse_args()
    global HERE
    HERE = Path(a.results) if a.results else HERE
    if a.smoke:  # 4 val items, 8 pair questions x 4 samples, 2 training steps
        HERE.mkdir(parents=True, exist_ok=True)
        (HERE / "README.md").write_text("<!-- pilot-table:start -->\n<!-- pilot-table:end -->\n")
        EVAL[:] = [*EVAL, "--limit", "4"]
        for u in UNITS:
            if u["kind"] == "pairs":
                u["args"].update(limit="8", k="4", max_new_tokens="200")
        TRAIN_BASE.update(max_steps="2")
    if a.table:
        write_table(power=a.power)
        return
    run = Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("YFPO_NO_PROGRESS", "1")
    only = set(a.only.split(",")) if a.only else None
    for u in UNITS:
        if only and u["name"] not in only:
            continue
        run_unit(run, u)
        write_table()
    log(run, "all units finished")


if __name__ == "__main__":
    main()

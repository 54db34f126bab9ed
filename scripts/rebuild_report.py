"""Rebuild a committed report from the small outputs `scripts/collect_run_data.py` kept, when the run folder is gone.

    python scripts/rebuild_report.py docs/results/experiment_controls/data docs/results/experiment_controls/config.yaml \
        docs/results/experiment_controls

It lays the kept files out as a `yfpo run` directory (run.json + one folder per finished stage, in a temporary
folder) and runs `yfpo report` on it, so the report comes from the same code as a live run's. What the data folder
does not hold is missing from the report and said so at its top (typically the NeuronSet and the causal check: they
are not collected). An eval without its summary.json (older collections kept items only) gets a summary counted
from its items, with the primary extractor given by --primary; a discrimination stage without its JSON gets one
counted from its items.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from yfpo.eval.stats import accuracy
from yfpo.report.build import build_report
from yfpo.utils import read_jsonl_resume

TAG = re.compile(r"^(?P<method>.+?)(?:-s(?P<seed>\d+))?$")


def _method_seed(tag: str) -> tuple[str, int | None]:
    m = TAG.match(tag)
    seed = m.group("seed")
    return m.group("method"), (int(seed) if seed is not None else None)


def _eval_summary(items: list[dict], bench: str, primary: str) -> dict:
    exts = sorted({e for it in items for e in (it.get("correct") or {})})
    return {
        "bench": bench,
        "n": len(items),
        "primary": primary,
        "accuracy": {e: accuracy([bool((it.get("correct") or {}).get(e)) for it in items]) for e in exts},
        "rebuilt": "counted from the kept items (no summary.json was kept)",
    }


def _stage(run: Path, name: str, kind: str, time_s: float | None, files: dict[str, Path | str]) -> dict:
    """One finished stage folder named after the stage, with `files` (name -> source path or text) and done.json."""
    folder = run / "stages" / name.replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    for fname, src in files.items():
        if isinstance(src, Path):
            shutil.copyfile(src, folder / fname)
        else:
            (folder / fname).write_text(src)
    (folder / "done.json").write_text(json.dumps({"name": name, "kind": kind, "time_s": time_s}))
    entry = {"name": name, "kind": kind, "dir": str(folder.relative_to(run)), "time_s": time_s}
    parts = name.split("/")
    if kind in ("eval", "discrimination", "mmlu"):
        entry["method"], entry["seed"] = _method_seed(parts[1])
        if kind == "eval":
            entry["bench"] = parts[2]
    elif kind == "train":
        entry["method"], entry["seed"] = _method_seed(parts[1])
    return entry


def lay_out(data: Path, config: dict, run: Path, primary: str = "flexible") -> list[str]:
    """Write a run directory at `run` from the collected `data` folder; returns what could not be laid out."""
    times = {}
    if (data / "stage_times.json").exists():
        times = {t["name"]: t.get("time_s") for t in json.loads((data / "stage_times.json").read_text())}
    stages, missing = [], []
    for f in sorted(data.iterdir()):
        parts = f.name.split(".")
        if f.name.endswith(".items.jsonl") and len(parts) == 4 and parts[1] != "discrimination":
            tag, bench = parts[0], parts[1]
            name = f"eval/{tag}/{bench}"
            summ = data / f"{tag}.{bench}.summary.json"
            items = read_jsonl_resume(f)
            summary = summ if summ.exists() else json.dumps(_eval_summary(items, bench, primary))
            stages.append(_stage(run, name, "eval", times.get(name), {"items.jsonl": f, "summary.json": summary}))
        elif f.name.endswith(".discrimination.items.jsonl"):
            tag = parts[0]
            name = f"eval/{tag}/discrimination"
            dj = data / f"{tag}.discrimination.json"
            if dj.exists():
                disc: Path | str = dj
            else:
                items = read_jsonl_resume(f)
                a = accuracy([bool(it["correct"]) for it in items])
                disc = json.dumps(
                    {"accuracy": a["acc"], "n": a["n"], "n_correct": a["n_correct"], "rebuilt": "from items"}
                )
            stages.append(
                _stage(run, name, "discrimination", times.get(name), {"discrimination.json": disc, "items.jsonl": f})
            )
        elif f.name.endswith(".mmlu.json"):
            name = f"eval/{parts[0]}/mmlu"
            stages.append(_stage(run, name, "mmlu", times.get(name), {"mmlu.json": f}))
        elif f.name.endswith(".metrics.jsonl"):
            name = f"train/{parts[0]}"
            stages.append(_stage(run, name, "train", times.get(name), {"metrics.jsonl": f}))
        elif f.name == "pairs.summary.json":
            stages.append(_stage(run, "pairs", "pairs", times.get("pairs"), {"summary.json": f}))
    laid = {s["name"] for s in stages}
    missing = sorted(n for n in times if n not in laid)
    if not times:  # an older collection: no stage list, so what else the run had is not known
        missing.append("the stage list and times (so any stage without kept outputs, e.g. the NeuronSet)")
    for s, t in times.items():  # stages whose outputs were not kept: listed with their times, not as finished
        if s in missing:
            stages.append({"name": s, "kind": s.split("/")[0], "dir": f"not-kept/{s}", "time_s": t, "kept": False})
    run.mkdir(parents=True, exist_ok=True)
    note = (
        f"Rebuilt from the committed data folder ({data.name}/, written by scripts/collect_run_data.py) after the run "
        "folder was gone: "
        + (
            "not kept there, so missing below: " + ", ".join(_kinds(missing)) + "."
            if missing
            else "everything the report reads was kept."
        )
    )
    (run / "run.json").write_text(
        json.dumps({"name": config.get("name", run.name), "config": config, "stages": stages, "note": note}, indent=1)
    )
    return missing


def _kinds(names: list[str]) -> list[str]:
    """['neurons', 'neurons_control/random-s0', ...] -> ['neurons', 'neurons_control (2 stages)'] (stable order)."""
    counts: dict[str, int] = {}
    for n in names:
        k = n.split("/")[0]
        counts[k] = counts.get(k, 0) + 1
    return [k if c == 1 else f"{k} ({c} stages)" for k, c in counts.items()]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a folder written by scripts/collect_run_data.py")
    ap.add_argument("config", type=Path, help="the run's config YAML")
    ap.add_argument("out", type=Path, help="where report.md, report.html and the PNGs go")
    ap.add_argument("--primary", default="flexible", help="primary extractor for evals kept without a summary.json")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"rebuild_report: {args.data} is not a folder", file=sys.stderr)
        return 2
    config = yaml.safe_load(args.config.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / config.get("name", "run")
        missing = lay_out(args.data, config, run, args.primary)
        page = build_report(run, args.out)
    print(f"rebuild_report: {page}" + (f" (not kept: {', '.join(_kinds(missing))})" if missing else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Copy the small, finished outputs of a `yfpo run` directory somewhere that survives the machine: per-item eval
rows (correct flags per extractor, extraction, length, a hash of the output text; no prompts or outputs), MMLU and
discrimination items, every training's metrics.jsonl, and each stage's wall time. Enough to redo every paired test,
output-difference count and training table of the report without the models; safe to rerun while the run goes on
(only finished stages are copied; a rerun rewrites the same files).

    python scripts/collect_run_data.py ~/runs/experiment_controls docs/results/experiment_controls/data
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from yfpo.utils import atomic_write_text, read_jsonl_resume

KEEP = ("id", "gold", "correct", "extracted", "n_tokens", "truncated", "finish")


def _slim(row: dict) -> dict:
    r = {k: row[k] for k in KEEP if k in row}
    if isinstance(row.get("output"), str):
        r["output_sha1"] = hashlib.sha1(row["output"].encode()).hexdigest()[:16]
    return r


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def collect(run: Path, out: Path) -> dict:
    """Every finished stage under `run` (its done.json: name, kind; two processes sharing a run dir each keep their
    own run.json, so the folders, not the index, are what is finished)."""
    out.mkdir(parents=True, exist_ok=True)
    times, n = [], 0
    for done in sorted(run.rglob("done.json")):
        folder = done.parent
        rec = json.loads(done.read_text())
        if "name" not in rec or "outputs" not in rec:
            continue  # a training's own done.json inside its folder, not a stage record
        name, kind = rec["name"], rec["kind"]
        times.append({"name": name, "kind": kind, "dir": str(folder.relative_to(run)), "time_s": rec.get("time_s")})
        parts = name.split("/")  # eval/<tag>/<bench>, train/<method>-s<seed>, pairs, ...
        if kind == "eval" and (folder / "items.jsonl").exists():
            _write_jsonl(
                out / f"{parts[1]}.{parts[2]}.items.jsonl",
                [_slim(r) for r in read_jsonl_resume(folder / "items.jsonl")],
            )
            (out / f"{parts[1]}.{parts[2]}.summary.json").write_text((folder / "summary.json").read_text())
            n += 1
        elif kind == "discrimination" and (folder / "discrimination.json").exists():
            (out / f"{parts[1]}.discrimination.json").write_text((folder / "discrimination.json").read_text())
            if (folder / "items.jsonl").exists():  # per pair: scores and the decision (small)
                _write_jsonl(out / f"{parts[1]}.discrimination.items.jsonl", read_jsonl_resume(folder / "items.jsonl"))
            n += 1
        elif kind == "mmlu" and (folder / "mmlu.json").exists():
            (out / f"{parts[1]}.mmlu.json").write_text((folder / "mmlu.json").read_text())
            n += 1
        elif kind == "train" and (folder / "metrics.jsonl").exists():
            (out / f"{parts[1]}.metrics.jsonl").write_text((folder / "metrics.jsonl").read_text())
            n += 1
        elif kind == "pairs" and (folder / "summary.json").exists():
            (out / "pairs.summary.json").write_text((folder / "summary.json").read_text())
    (out / "stage_times.json").write_text(json.dumps(sorted(times, key=lambda t: t["name"]), indent=1))
    return {"files": n, "stages": len(times)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a `yfpo run` directory (holds run.json)")
    ap.add_argument("out", type=Path, help="folder for the copies (created)")
    args = ap.parse_args(argv)
    if not (args.run_dir / "run.json").exists():
        print(
            f"collect_run_data: {args.run_dir}/run.json does not exist; is it a `yfpo run` directory?", file=sys.stderr
        )
        return 2
    r = collect(args.run_dir, args.out)
    print(f"[collect] {r['stages']} finished stages, {r['files']} files -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

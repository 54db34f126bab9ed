#!/usr/bin/env python
"""End-to-end pipeline time: `yfpo run CONFIG` from scratch, stage by stage, for one or more variants.

Each variant is a list of `yfpo run` overrides (e.g. the generation backend), run in its own fresh run folder
under --out-root, one after the other (the machine is shared: run variants in the same invocation, so the load
they see is comparable). The per-stage wall times come from the run's own records: run.json lists every stage
and each stage folder's done.json holds its `time_s` (written by yfpo.pipeline.store.StageStore). Printed: total wall
time, time per stage kind (neurons, check, pairs, train, eval, discrimination) and per stage, plus the machine.

    .venv/bin/python benchmarks/bench_pipeline.py configs/quick.yaml \
        --variant before "--eval.backend hf --pairs.backend hf" --variant after "--eval.backend auto" \
        --out-root /root/runs/bench_pipeline --json /root/runs/bench_pipeline/result.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from _machine import cpu as machine_cpu


def stage_times(run_dir: Path) -> list[dict]:
    """Every stage of a finished (or interrupted) run: name, kind, status, seconds (from its done.json)."""
    index_path = run_dir / "run.json"
    if not index_path.exists():
        raise SystemExit(f"{index_path}: no run.json (did `yfpo run` start? see its output above)")
    index = json.loads(index_path.read_text())
    rows = []
    for s in index.get("stages", []):
        done = run_dir / s["dir"] / "done.json"
        t = json.loads(done.read_text()).get("time_s") if done.exists() else None
        rows.append({"name": s["name"], "kind": s["kind"], "status": s.get("status"), "time_s": t})
    return rows


def run_variant(config: str, name: str, overrides: list[str], out_root: Path) -> dict:
    run_name = f"bench-{name}-{int(time.time())}"
    cmd = [sys.executable, "-m", "yfpo.cli", "run", config, "--name", run_name, "--out_root", str(out_root), *overrides]
    print(f"[{name}] {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - t0
    stages = stage_times(out_root / run_name)
    by_kind: dict[str, float] = defaultdict(float)
    for s in stages:
        by_kind[s["kind"]] += s["time_s"] or 0.0
    return {
        "name": name,
        "overrides": overrides,
        "rc": proc.returncode,
        "wall_s": wall,
        "run_dir": str(out_root / run_name),
        "by_kind": dict(by_kind),
        "stages": stages,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="run config YAML (configs/quick.yaml, or a cpu_result-sized one)")
    ap.add_argument(
        "--variant",
        nargs=2,
        action="append",
        metavar=("NAME", "OVERRIDES"),
        help="a named variant and its `yfpo run` overrides as one string; repeatable "
        "(default: one variant, 'default', no overrides)",
    )
    ap.add_argument("--out-root", default="/root/runs/bench_pipeline", help="fresh run folders go here")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    variants = args.variant or [("default", "")]
    out_root = Path(args.out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    model_name, _ = machine_cpu()
    print(
        f"machine: {model_name}, {os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
        f"uptime at start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
        flush=True,
    )
    results = [run_variant(args.config, name, shlex.split(ov), out_root) for name, ov in variants]

    kinds = sorted({k for r in results for k in r["by_kind"]})
    print()
    print("stage columns: seconds summed over the stages of that kind (with --workers they overlap: > wall)")
    print("| variant | total wall (s) | speed-up vs first | " + " | ".join(f"{k} (s)" for k in kinds) + " | exit |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " | ---: |")
    for r in results:
        print(
            f"| {r['name']} | {r['wall_s']:.0f} | {results[0]['wall_s'] / r['wall_s']:.2f}x | "
            + " | ".join(f"{r['by_kind'].get(k, 0):.0f}" for k in kinds)
            + f" | {r['rc']} |"
        )
    for r in results:
        print(f"\n{r['name']} ({r['run_dir']}):")
        for s in r["stages"]:
            t = "n/a" if s["time_s"] is None else f"{s['time_s']:.1f} s"
            print(f"  {s['name']:<40} {s['kind']:<15} {s['status'] or '':<8} {t}")
    print(f"\nuptime at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": model_name, "config": args.config, "results": results}, indent=2)
        )
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

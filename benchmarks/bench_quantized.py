#!/usr/bin/env python
"""What a reduced-precision backend costs in accuracy: the same `yfpo eval` run through each backend, paired.

Every backend named gets the same items of each benchmark (the first --limit), the same chat prompts and greedy
decoding, through yfpo.eval.bench.run_eval (the path `yfpo eval` and `yfpo run` take). The first backend is the
reference (an exact float32 path: fast or hf); for every other backend the table gives its accuracy (primary
extractor, Wilson 95% CI), the paired difference to the reference (percentage points, paired-bootstrap 95% CI,
McNemar's exact p over the items), the share of greedy outputs identical to the reference (same text and token
count), and tokens/s with the speed-up over the reference (generation time of that run, after a one-prompt warm-up
that pays each backend's setup; one process, --threads).

Each (benchmark, backend) evaluation is written to --work DIR/<bench>/<backend>/ (items.jsonl + summary.json) and
resumes there when rerun (speeds are then those of the run that generated the items, kept in timing.json).

    .venv/bin/python benchmarks/bench_quantized.py --backends fast,fast-bf16,ct2-int8 \\
        --benches mawps_singleop,gsm8k --limit 200 --work ~/runs/bench_quantized
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _machine import cpu as machine_cpu


def _timing(folder: Path, summary: dict) -> dict:
    """Speed of the run that generated this folder's items (a resumed call generates nothing: keep the first)."""
    path = folder / "timing.json"
    if summary.get("new_items") == summary.get("n") and summary.get("tokens_per_s"):
        t = {k: summary[k] for k in ("time_s", "tokens_generated", "tokens_per_s")}
        path.write_text(json.dumps(t))
        return t
    if path.exists():
        return json.loads(path.read_text())
    return {"time_s": None, "tokens_generated": summary.get("tokens_generated"), "tokens_per_s": None}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="fast,fast-bf16,ct2-int8", help="comma list, exact reference first")
    ap.add_argument("--benches", default="mawps_singleop,gsm8k", help="comma list of benchmarks")
    ap.add_argument("--limit", type=int, default=200, help="first N items of each benchmark (the issue asks >= 200)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 on a shared machine)")
    ap.add_argument("--work", default=str(Path.home() / "runs" / "bench_quantized"), help="eval folders (resumable)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    if len(backends) < 2:
        ap.error("--backends needs a reference and at least one backend to compare with it")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from yfpo.engine.generate import generate
    from yfpo.engine.prompts import build_prompt
    from yfpo.eval.bench import compare_items, load_items, run_eval
    from yfpo.eval.stats import wilson_ci
    from yfpo.grading import PRIMARY
    from yfpo.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    cpu_name, flags = machine_cpu()
    print(
        f"# machine: {cpu_name} (flags {' '.join(flags)}), {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"model {args.model}; {args.limit} items per benchmark, {args.max_new_tokens} new tokens, greedy",
        flush=True,
    )
    results: dict = {
        "machine": cpu_name,
        "flags": flags,
        "threads": torch.get_num_threads(),
        "args": vars(args),
        "benches": {},
    }
    for bench in benches:
        runs = {}
        for b in backends:
            folder = Path(args.work).expanduser() / bench / b
            # one-off setup (conversion, engine load, bf16 copy) outside the timed run
            generate(model, tok, [build_prompt(tok, "What is 2 + 3?")], max_new_tokens=2, backend=b, progress=False)
            summary = run_eval(
                model,
                bench,
                tokenizer=tok,
                limit=args.limit,
                out_dir=folder,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                backend=b,
            )
            runs[b] = {"items": load_items(folder), "summary": summary, "timing": _timing(folder, summary)}
        ref_name = backends[0]
        ref = runs[ref_name]
        ref_out = {r["id"]: (r["output"], r["n_tokens"]) for r in ref["items"]}
        print(f"\n## {bench} ({len(ref['items'])} items; reference: {ref_name})\n")
        print(
            f"| backend | accuracy % ({PRIMARY}) [95% CI] | diff vs {ref_name} (pp) [95% CI] | McNemar p | "
            f"only ref / only this right | outputs identical to {ref_name} | tokens/s | speed-up |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = {}
        for b in backends:
            r = runs[b]
            n = len(r["items"])
            k = sum(bool(it["correct"][PRIMARY]) for it in r["items"])
            lo, hi = wilson_ci(k, n)
            same = sum(ref_out.get(it["id"]) == (it["output"], it["n_tokens"]) for it in r["items"])
            tps = r["timing"]["tokens_per_s"]
            speed = tps / ref["timing"]["tokens_per_s"] if tps and ref["timing"]["tokens_per_s"] else None
            row = {"n": n, "correct": k, "acc": k / n, "ci": [lo, hi], "identical": same, "tokens_per_s": tps}
            row["speed_up"] = speed
            if b == ref_name:
                diff = "(reference)"
                p = pairs = ""
            else:
                c = compare_items(ref["items"], r["items"])["by_extractor"][PRIMARY]
                # compare_items(a=ref, b=this): diff = this - reference
                row.update(diff=c["diff"], ci_diff=[c["ci_lo"], c["ci_hi"]], mcnemar_p=c["mcnemar_p"])
                # b10 = items only the reference got right, b01 = only this one
                row.update(only_ref=c["b10"], only_this=c["b01"])
                diff = f"{100 * row['diff']:+.1f} [{100 * row['ci_diff'][0]:+.1f}, {100 * row['ci_diff'][1]:+.1f}]"
                p, pairs = f"{c['mcnemar_p']:.3g}", f"{c['b10']} / {c['b01']}"
            rows[b] = row
            print(
                f"| {b} | {_pct(k / n)} [{_pct(lo)}, {_pct(hi)}] | {diff} | {p} | {pairs} | {same}/{n} | "
                f"{tps if tps is not None else 'n/a'} | {f'{speed:.2f}x' if speed else 'n/a'} |",
                flush=True,
            )
        results["benches"][bench] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

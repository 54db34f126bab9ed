"""`yfpo eval` and `yfpo compare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from yfpo.engine.backends import BACKEND_NAMES


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on math benchmarks (all extractors, Wilson CIs), pair discrimination, MMLU retention",
        description="Batched greedy evaluation. Writes OUT/<bench>/items.jsonl (per item: prompt, output, every "
                    "extraction, correct flags) and OUT/<bench>/summary.json (accuracy per extractor with Wilson 95%% CI, "
                    "protocol, versions, tokens/s). Rerunning with the same --out resumes: finished items are skipped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="default", help="hub id, local folder (a training run's final/ works), or 'default'")
    p.add_argument("--bench", action="append", default=None,
                   help="benchmark(s), repeatable or comma-separated: gsm8k, math500, svamp, asdiv_a, mawps, mawps_singleop, "
                        "..., discrimination (held-out solution pairs), mmlu (retention)")
    p.add_argument("--bench-file", default=None, help="a JSONL file in a benchmark's format (with one --bench name)")
    p.add_argument("--limit", type=int, default=None, help="first N problems (discrimination: N pairs; mmlu: N per subject)")
    p.add_argument("--shots", type=int, default=0, help="n-shot exemplars from GSM8K train (0 = zero-shot chat CoT)")
    p.add_argument("--out", default=None, help="output folder (default: runs/eval/<model>/)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $YFPO_DATA_DIR, then ../shared/data)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--hub", action="store_true", help="fetch a benchmark missing locally from the Hugging Face Hub")
    p.add_argument("--overwrite", action="store_true", help="empty each benchmark's --out folder first (made by another config)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--backend", default="auto", choices=list(BACKEND_NAMES),
                   help="generation backend (yfpo.engine.backends): auto = vLLM with a GPU, else the fast exact CPU path")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.set_defaults(func=_eval)

    c = sub.add_parser("compare", help="paired comparison of two eval runs (McNemar exact p, paired bootstrap CI)",
                       description="RUN_A and RUN_B are eval output folders (with items.jsonl) or items.jsonl files of "
                                   "the same benchmark; items are paired by id.")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--n-boot", type=int, default=10000)
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=_compare)


def _benches(args) -> list[str]:
    raw = args.bench or ["gsm8k"]
    return [b.strip() for x in raw for b in x.split(",") if b.strip()]


def _eval(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from yfpo.engine.answers import EXTRACTORS
    from yfpo.eval.bench import run_eval
    from yfpo.models import load_model

    benches = _benches(args)
    if args.bench_file and len(benches) != 1:
        raise ValueError("--bench-file needs exactly one --bench name (the file's format)")
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    safe = args.model.strip("/").replace("/", "__")
    out_root = Path(args.out or f"runs/eval/{safe}")
    console = Console()
    table = Table(title=f"{args.model}: accuracy (Wilson 95% CI)")
    table.add_column("bench")
    table.add_column("n", justify="right")
    for e in EXTRACTORS:
        table.add_column(e, justify="right")
    table.add_column("tok/s", justify="right")
    for b in benches:
        if b == "discrimination":
            from yfpo.eval.discrimination import run_discrimination

            s = run_discrimination(model, tok, limit=args.limit, out_dir=out_root / b, data_dir=args.data_dir,
                                   batch_size=max(1, args.batch_size // 2))
            table.add_row(b, str(s["n"]), f"{s['accuracy']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] (prefers correct)", "", "", "", "")
            continue
        if b == "mmlu":
            from yfpo.eval.mmlu import run_mmlu

            s = run_mmlu(model, tok, per_subject=args.limit or 5, out_dir=out_root / b, data_dir=args.data_dir,
                         batch_size=max(1, args.batch_size // 2))
            for part in ("non_math", "redux_ok"):
                a = s[part]
                table.add_row(f"mmlu {part}", str(a["n"]), f"{a['acc']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] (letter log-lik)", "", "", "", "")
            continue
        s = run_eval(model, b, tokenizer=tok, limit=args.limit, shots=args.shots, out_dir=out_root / b,
                     batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, data_dir=args.data_dir,
                     backend=args.backend, bench_file=args.bench_file, hub=args.hub or None, overwrite=args.overwrite)
        cells = [f"{s['accuracy'][e]['acc']:.3f} [{s['accuracy'][e]['lo']:.3f}, {s['accuracy'][e]['hi']:.3f}]" for e in EXTRACTORS]
        table.add_row(b, str(s["n"]), *cells, str(s.get("tokens_per_s") or "-"))
    console.print(table)
    console.print(f"per-item outputs and summaries in {out_root}/")
    return 0


def _compare(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from yfpo.eval.bench import compare_items, load_items

    res = compare_items(load_items(args.run_a), load_items(args.run_b), n_boot=args.n_boot)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    t = Table(title=f"A = {args.run_a}   B = {args.run_b}   ({res['n']} paired items)")
    for col in ("extractor", "acc A", "acc B", "B - A", "95% CI (bootstrap)", "McNemar p", "A-only / B-only right"):
        t.add_column(col, justify="right")
    for e, r in res["by_extractor"].items():
        t.add_row(e, f"{r['acc_a']:.3f}", f"{r['acc_b']:.3f}", f"{r['diff']:+.3f}", f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]",
                  f"{r['mcnemar_p']:.3g}", f"{r['b10']} / {r['b01']}")
    Console().print(t)
    if res["only_a"] or res["only_b"]:
        print(f"note: {res['only_a']} items only in A and {res['only_b']} only in B were left out")
    return 0

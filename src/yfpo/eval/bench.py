"""`run_eval`: generate on a benchmark, grade with every extractor, write per-item JSONL + summary JSON.

Output folder: items.jsonl (one row per problem, appended as batches finish: a rerun skips the items
already there) and summary.json (accuracy per extractor with Wilson 95% CIs, the protocol, model,
versions, time and tokens/s, and `data`: the benchmark file(s) read, path + sha256). The folder records
its config (yfpo.resume): a rerun with another model, benchmark file, protocol or sampling setting is refused,
not mixed in. `compare_items` pairs two runs item by item.

Beyond greedy: `samples`/`temperature` keep every sample per item with pass@k, maj@k and avg@n
(eval/sampled.py); a TaskSpec (data/taskspec.py) evaluates any benchmark file, with per-group accuracy
and "no answer" golds graded as such; `protocol` picks a named prompting protocol (engine/prompts.py),
whose text is saved in the summary's protocol. Mean answer length (tokens) sits beside accuracy.

Grading faults are stated, not hidden: each item is marked `truncated` (it hit max_new_tokens without a stop/eos),
the summary's `truncation` gives their number, rate and each extractor's accuracy with them counted wrong; under
answer_kind none-allowed an output that both answers and abstains is `conflicted` (yfpo.grading.grade_item),
counted apart in the summary.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from yfpo.data.problems import Problem, benchmark_kind, benchmark_provenance, load_benchmark
from yfpo.engine.common import sample_seed
from yfpo.engine.generate import generate
from yfpo.engine.prompts import build_prompt, get_protocol
from yfpo.eval import lmeval
from yfpo.eval.config import EvalConfig
from yfpo.eval.sampled import item_metrics, summarize_sampled
from yfpo.eval.stats import accuracy, mcnemar_exact, paired_bootstrap, paired_diff_ci, sign_flip_exact
from yfpo.grading import EXTRACTORS, PRIMARY, grade_item
from yfpo.utils import append_jsonl, atomic_write_json, now, read_jsonl_resume, versions
from yfpo.utils import progress as bar

EVAL_CHUNK = 256  # the fewest items run_eval gives one generate call (see there)


def _load(model, tokenizer, dtype, device):
    if isinstance(model, str):
        from yfpo.models import load_model

        m, tok = load_model(model, dtype=dtype, device=device)
        return m, tok, model
    if tokenizer is None:
        raise ValueError("run_eval: pass tokenizer= with a loaded model")
    return model, tokenizer, getattr(model.config, "name_or_path", type(model).__name__)


def summarize(rows: list[dict], bench: str, model_name: str, protocol: dict, extra: dict | None = None) -> dict:
    acc = {e: accuracy([r["correct"][e] for r in rows]) for e in EXTRACTORS}
    out = {
        "bench": bench,
        "model": model_name,
        "n": len(rows),
        "primary": PRIMARY,
        "accuracy": acc,
        "answer_length": answer_length(rows),
        "truncation": truncation(rows),
        "protocol": protocol,
    }
    if any("group" in r for r in rows):
        out["by_group"] = {
            g: {e: accuracy([r["correct"][e] for r in rows if r.get("group") == g]) for e in EXTRACTORS}
            for g in sorted({str(r.get("group")) for r in rows})
        }
    if any("conflicted" in r for r in rows):  # answer_kind none-allowed: answer and abstention at once, apart
        out["conflicted"] = sum(1 for r in rows if r.get("conflicted"))
    if any(r.get("no_answer") for r in rows):
        for part, keep in (("no_answer", True), ("answerable", False)):
            sub = [r for r in rows if bool(r.get("no_answer")) == keep]
            out[part] = {e: accuracy([r["correct"][e] for r in sub]) for e in EXTRACTORS}
    if rows and "samples" in rows[0]:
        out["sampled"] = summarize_sampled([r["sampled"] for r in rows], EXTRACTORS)
    return {**out, **(extra or {})}


def truncation(rows: list[dict]) -> dict:
    """How many outputs hit max_new_tokens without a stop/eos (`truncated`), their rate, and each extractor's
    accuracy with those outputs counted wrong: a cut-off output whose last number happens to equal the gold
    (a quantity copied from the question, say) is credited by the flexible extractor, not by this number."""
    n = sum(1 for r in rows if r.get("truncated"))
    out = {
        "n": n,
        "rate": n / len(rows) if rows else 0.0,
        "accuracy_if_truncated_wrong": {
            e: sum(1 for r in rows if r["correct"][e] and not r.get("truncated")) / len(rows) if rows else 0.0
            for e in EXTRACTORS
        },
    }
    samples = [s for r in rows for s in r.get("samples", [])]
    if samples:  # sampled: the items' numbers are sample 0's (the `correct` flag's); the rate over every sample too
        out["samples_rate"] = sum(1 for s in samples if s.get("truncated")) / len(samples)
    return out


def answer_length(rows: list[dict]) -> dict:
    """Mean generated tokens per answer (over every sample when sampled) and its mean over correct answers."""
    lens = [s["n_tokens"] for r in rows for s in r.get("samples", [r])]
    right = [s["n_tokens"] for r in rows for s in r.get("samples", [r]) if s["correct"][PRIMARY]]
    return {
        "mean_tokens": sum(lens) / len(lens) if lens else 0.0,
        "mean_tokens_correct": sum(right) / len(right) if right else None,
        "n": len(lens),
    }


# the EvalConfig fields an output folder is claimed under (yfpo.resume.claim): another value is refused, not mixed
# in; limit is not one (items are graded one by one, so another limit only adds or leaves out items)
_CLAIM_KEYS = (
    "shots",
    "shots_file",
    "max_new_tokens",
    "backend",
    "dtype",
    "protocol",
    "samples",
    "temperature",
    "top_p",
    "seed",
)

# protocol fields that change outputs: a rerun into the same folder must match them to resume
_RESUME_KEYS = (
    "bench",
    "model",
    "template",
    "instruction",
    "system",
    "shots",
    "shots_file",
    "decoding",
    "max_new_tokens",
    "kind",
    "samples",
    "temperature",
    "top_p",
    "seed",
    "sample_seeds",  # the seeding scheme: items sampled under another one are not mixed in
    "task",
    "backend",
)


def _check_protocol(out: Path, protocol: dict, resuming: bool) -> None:
    """Write out/protocol.json; when resuming, refuse to mix items generated under another protocol."""
    import json

    p = out / "protocol.json"
    if resuming and p.exists():
        old = json.loads(p.read_text())
        diff = [k for k in _RESUME_KEYS if k in old and old.get(k) != protocol.get(k)]
        if diff:
            raise ValueError(
                f"{out} holds items from another protocol ({', '.join(f'{k}: {old[k]!r} -> {protocol.get(k)!r}' for k in diff)}); "
                "use another --out folder or delete it"
            )
    atomic_write_json(p, protocol)


def _make_protocol(tok, cfg: EvalConfig, kind: str, spec) -> dict:
    proto = get_protocol(cfg.protocol)
    sampled, shots, shots_file = cfg.sampled, cfg.shots, cfg.shots_file
    d = {
        "template": proto.name,
        "instruction": proto.instruction,
        "system": proto.system,
        "protocol_text": proto.to_dict(),
        "chat_template": bool(getattr(tok, "chat_template", None)),
        "shots": shots,
        "shots_file": shots_file,
        "shot_source": (shots_file or "gsm8k_train") + f"[:{shots}]" if shots else None,
        "decoding": "sampling" if sampled else "greedy",
        "max_new_tokens": cfg.max_new_tokens,
        "extractors": list(EXTRACTORS),
        "primary": PRIMARY,
        "stop": "end-of-turn token",
        "batch_size": cfg.batch_size,
        "kind": kind,
    }
    if sampled:
        d.update(
            samples=cfg.samples,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed,
            sample_seeds="sample_seed(seed, item id) per item, row_seed(it, sample) per sample (generate's seeds=): "
            "independent of batching/resume",
            correct_is="sample 0 (an unbiased one-sample accuracy); pass@k, maj@k, avg@n under 'sampled'",
        )
    if spec is not None:
        d["task"] = spec.to_dict()
    return d


def _row(p: Problem, prompt: str, gens: list, kind: str, none_ok: bool, sampled: bool) -> dict:
    """One item's row: greedy (one generation) keeps the flat layout; sampled adds every sample + metrics."""
    graded = [grade_item(g.text, p.answer, kind, none_ok, bool(p.meta.get("no_answer"))) for g in gens]
    g0, gr0 = gens[0], graded[0]
    row = {
        "id": p.id,
        "question": p.question,
        "gold": p.answer,
        "prompt": prompt,
        "output": g0.text,
        "n_tokens": g0.n_tokens,
        "truncated": g0.truncated,
        "finish": g0.finish,
        "extracted": gr0["extracted"],
        "correct": gr0["correct"],
    }
    if "group" in p.meta:
        row["group"] = p.meta["group"]
    if none_ok:
        row["no_answer"] = bool(p.meta.get("no_answer"))
        row["conflicted"] = bool(gr0.get("conflicted"))
    if sampled:
        row["samples"] = [
            {"output": g.text, "n_tokens": g.n_tokens, "truncated": g.truncated, "finish": g.finish, **gr}
            for g, gr in zip(gens, graded)
        ]
        row["sampled"] = item_metrics(row["samples"], EXTRACTORS)
    return row


class _EvalJob:
    """One benchmark's evaluation of one loaded model into one folder: the items to do, their prompts, the rows
    graded so far (appended to items.jsonl as they come), the summary at the end. run_eval drives one;
    run_evals drives several through one generation pass."""

    def __init__(
        self,
        m,
        tok,
        model_name: str,
        bench: str,
        cfg: EvalConfig,
        *,
        out_dir=None,
        bench_file=None,
        problems=None,
        spec=None,
    ):
        self.tok, self.model_name, self.cfg = tok, model_name, cfg
        limit, data_dir = cfg.limit, cfg.data_dir
        if spec is not None:
            from yfpo.data.taskspec import load_task
            from yfpo.utils import sha256_file

            probs = problems if problems is not None else load_task(spec)
            kind, none_ok, bench = spec.grade_kind, spec.answer_kind == "none-allowed", spec.name
            data = [{"path": str(Path(spec.file).resolve()), "sha256": sha256_file(Path(spec.file))}]
        else:
            probs = (
                problems
                if problems is not None
                else load_benchmark(bench, data_dir=data_dir, path=bench_file, hub=cfg.hub)
            )
            kind, none_ok = benchmark_kind(bench), False
            data = benchmark_provenance(bench, data_dir, bench_file)
        if problems is not None:
            data = [{"path": None, "passed_in": len(probs)}]
        self.n_original = len(probs)  # the benchmark's items; the first `limit` are evaluated
        probs = probs[:limit] if limit and problems is None else probs
        mcfg = getattr(m, "config", None)
        self.model_info = {
            "num_parameters": sum(p.numel() for p in m.parameters()) if hasattr(m, "parameters") else None,
            "max_length": getattr(mcfg, "max_position_embeddings", None),
        }
        if not probs:
            raise ValueError(
                f"{(spec.file if spec is not None else bench_file) or bench}: no problems to evaluate "
                "(the benchmark file has no rows)"
            )
        self.bench, self.probs, self.kind, self.none_ok, self.data = bench, probs, kind, none_ok, data
        self.sampled = cfg.sampled
        out = self.out = Path(out_dir) if out_dir else None
        if out:
            from yfpo.resume import claim, model_identity

            # items are graded one by one, so another limit only adds or leaves out items: not part of the record
            claim(
                out,
                "eval",
                {
                    "model": model_identity(model_name),
                    "bench": bench,
                    "data": [d.get("sha256") for d in data],
                    **{k: getattr(cfg, k) for k in _CLAIM_KEYS},
                    "spec": spec.to_dict() if spec is not None else None,
                },
                overwrite=cfg.overwrite,
            )
        self.items_path = out / "items.jsonl" if out else None
        done = {r["id"]: r for r in read_jsonl_resume(self.items_path)} if self.items_path else {}
        self.todo = [p for p in probs if p.id not in done]
        self.prot = _make_protocol(tok, cfg, kind, spec)
        from yfpo.engine.backends import record

        self.prot["backend"] = record(cfg.backend, m)
        if out:
            _check_protocol(out, {**self.prot, "model": model_name, "bench": bench}, resuming=bool(done))
        self.rows = [done[p.id] for p in probs if p.id in done]
        self.new_tokens = 0

    def prompt(self, p: Problem) -> str:
        c = self.cfg
        return build_prompt(
            self.tok, p.question, shots=c.shots, data_dir=c.data_dir, protocol=c.protocol, shots_file=c.shots_file
        )

    def add(self, part: list[Problem], prompts: list[str], per_item: list[list]) -> None:
        """Grade one finished chunk (per item: its generations) and append its rows to items.jsonl."""
        new_rows = [
            _row(p, prompt, gs, self.kind, self.none_ok, self.sampled) for p, prompt, gs in zip(part, prompts, per_item)
        ]
        self.new_tokens += sum(g.n_tokens for gs in per_item for g in gs)
        if self.items_path:
            append_jsonl(self.items_path, new_rows)
        self.rows.extend(new_rows)

    def finish(self, elapsed: float, extra: dict | None = None) -> dict:
        """The summary (written to summary.json) over every item, resumed ones included."""
        order = {p.id: i for i, p in enumerate(self.probs)}
        self.rows.sort(key=lambda r: order.get(r["id"], 1 << 30))
        n_new, tokens = len(self.todo), self.new_tokens
        summary = summarize(
            self.rows,
            self.bench,
            self.model_name,
            self.prot,
            {
                "data": self.data,
                "versions": versions(),
                "date": now(),
                "time_s": round(elapsed, 2),
                "new_items": n_new,
                "tokens_generated": tokens,
                "tokens_per_s": round(tokens / elapsed, 2) if elapsed > 0 and tokens else None,
                "problems_per_s": round(n_new / elapsed, 4) if elapsed > 0 and n_new else None,
                "truncated": sum(1 for r in self.rows if r.get("truncated")),
                **(extra or {}),
            },
        )
        if self.out:
            atomic_write_json(self.out / "summary.json", summary)
            lmeval.write(
                self.out,
                self.rows,
                summary,
                cfg=self.cfg,
                tok=self.tok,
                model_info=self.model_info,
                n_original=self.n_original,
                elapsed=elapsed,
            )
        return summary


def _settings(config: EvalConfig | None, settings: dict, bench: str | None = None) -> EvalConfig:
    """`config` with keyword `settings` on top, validated (no model I/O) before any model is loaded: bad limits or
    sampling settings, an unknown benchmark (did-you-mean) or its missing data file, a missing shots file."""
    cfg = (config or EvalConfig()).replace(**settings)
    cfg.replace(benches=[bench] if bench else [], tasks=[]).validate()
    return cfg


def _chunk(chunk: int | None, batch_size: int) -> int:
    # items per generate call (and per append to items.jsonl): wide enough for the fast backend's token-filled
    # batches (up to yfpo.engine.fast.MAX_ROWS rows), small enough that an interrupted run loses a few minutes at most
    return chunk or max(batch_size * 4, EVAL_CHUNK)


def run_eval(
    model,
    bench: str,
    *,
    tokenizer=None,
    config: EvalConfig | None = None,
    out_dir=None,
    bench_file: str | None = None,
    problems: list[Problem] | None = None,
    spec=None,
    chunk: int | None = None,
    progress: bool = True,
    **settings,
) -> dict:
    """Evaluate `model` (alias/path, or a loaded model with tokenizer=) on `bench` (or on a TaskSpec `spec`) into
    `out_dir`, under `config` (an EvalConfig; its benches/tasks are not read here) with any EvalConfig field given
    as a keyword on top (run_eval(m, "gsm8k", limit=3, max_new_tokens=64)). Settings are validated before the
    model loads.

    Greedy by default. samples > 1 or temperature > 0: `samples` sampled answers per item, each kept,
    seeded per item (sample_seed), with pass@k / maj@k / avg@n in the summary. Returns the summary."""
    builtin = bench if bench_file is None and problems is None and spec is None else None
    cfg = _settings(config, settings, builtin)
    m, tok, model_name = _load(model, tokenizer, cfg.dtype, cfg.device)
    job = _EvalJob(m, tok, model_name, bench, cfg, out_dir=out_dir, bench_file=bench_file, problems=problems, spec=spec)
    return job.finish(_pass(m, tok, [job], cfg, chunk, progress))


def _pass(m, tok, jobs: list, cfg: EvalConfig, chunk: int | None, progress) -> float:
    """One generation pass over the jobs' pending items: greedy, or sampled with about as many rows per call as a
    greedy chunk."""
    sampling = {k: getattr(cfg, k) for k in ("samples", "temperature", "top_p", "seed")} if cfg.sampled else None
    size = max(1, _chunk(chunk, cfg.batch_size) // cfg.samples)
    return _greedy_pass(m, tok, jobs, size, cfg.max_new_tokens, cfg.batch_size, cfg.backend, progress, sampling)


def _greedy_pass(
    m, tok, jobs: list, size: int, max_new_tokens: int, batch_size: int, backend: str, progress, sampling=None
) -> float:
    """Generation for the pending items of `jobs` (one benchmark each), `size` items per generate call, each chunk
    graded into its job as it finishes; returns the seconds it took. Greedy, or with `sampling` (samples,
    temperature, top_p, seed) `samples` answers per item, each item seeded by sample_seed(seed, item id) alone
    (generate's seeds=: the same samples whatever the chunk, so wide calls and resume agree)."""
    work = [(j, p) for j in jobs for p in j.todo]
    t0 = time.time()
    n = sampling["samples"] if sampling else 1
    pbar = bar(
        total=len(work), desc=f"eval {'+'.join(j.bench for j in jobs)}", unit="item", disable=None if progress else True
    )
    tokens = 0
    try:
        for start in range(0, len(work), size):
            part = work[start : start + size]
            prompts = [j.prompt(p) for j, p in part]
            kw = {}
            if sampling:
                kw = dict(
                    do_sample=True,
                    temperature=sampling["temperature"],
                    top_p=sampling["top_p"],
                    num_return_sequences=n,
                    seeds=[sample_seed(sampling["seed"], p.id) for _, p in part],
                )
            gens = generate(
                m,
                tok,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=max(batch_size, n),
                backend=backend,
                progress=progress,
                desc=f"chunk {start // size + 1}/{-(-len(work) // size)}",
                **kw,
            )
            per_item = [gens[i * n : (i + 1) * n] for i in range(len(part))]
            for j in jobs:
                mine = [(p, pr, gs) for (jj, p), pr, gs in zip(part, prompts, per_item) if jj is j]
                if mine:
                    j.add(*(list(x) for x in zip(*mine)))
            tokens += sum(g.n_tokens for g in gens)
            pbar.update(len(part))
            pbar.set_postfix(tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
    finally:
        pbar.close()
    return time.time() - t0


_JOB_KEYS = ("bench", "out_dir", "bench_file", "problems", "spec")  # one benchmark's arguments


def run_evals(
    model,
    jobs: list[dict],
    *,
    tokenizer=None,
    config: EvalConfig | None = None,
    chunk: int | None = None,
    progress: bool = True,
    **settings,
) -> list[dict]:
    """Several benchmarks of one model, the model loaded once and generated in ONE pass (greedy or sampled): the
    pending items of every benchmark share the generate calls (a decode step costs about the same for 12 rows as
    for 24 on a CPU, so two small benchmarks take about the time of one). Each benchmark keeps its own folder,
    items, summary and resume, exactly as run_eval writes them; its `time_s` is its share (by generated tokens)
    of the joint pass, recorded under `joint_pass`.

    jobs: one dict per benchmark of run_eval's per-benchmark arguments (bench, out_dir, and optionally bench_file,
    problems, spec); config/settings: the EvalConfig common to all, as in run_eval. Returns the summaries in jobs'
    order. Sampled items are seeded per item (generate's seeds=), so sharing calls changes none of their samples."""
    bad = [k for j in jobs for k in j if k not in _JOB_KEYS]
    if bad:
        raise TypeError(f"run_evals: a job takes {', '.join(_JOB_KEYS)}, not {bad[0]!r}")
    if not jobs:
        return []
    cfg = (config or EvalConfig()).replace(**settings)
    builtin = [j["bench"] for j in jobs if not any(j.get(k) is not None for k in ("bench_file", "problems", "spec"))]
    cfg.replace(benches=list(dict.fromkeys(builtin)), tasks=[]).validate()
    m, tok, model_name = _load(model, tokenizer, cfg.dtype, cfg.device)
    if len(jobs) == 1:
        return [run_eval(m, tokenizer=tok, config=cfg, chunk=chunk, progress=progress, **jobs[0])]
    ejobs = [
        _EvalJob(m, tok, model_name, j["bench"], cfg, **{k: v for k, v in j.items() if k != "bench"}) for j in jobs
    ]
    elapsed = _pass(m, tok, ejobs, cfg, chunk, progress)
    total = sum(j.new_tokens for j in ejobs)
    joint = {"benches": [j.bench for j in ejobs], "time_s": round(elapsed, 2), "tokens_generated": total}
    # (so each benchmark's tokens_per_s is the pass's)
    return [
        j.finish(elapsed * (j.new_tokens / total if total else 1 / len(ejobs)), {"joint_pass": joint}) for j in ejobs
    ]


def load_items(path) -> list[dict]:
    p = Path(path)
    if p.is_dir():
        p = p / "items.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist (expected an eval output folder or its items.jsonl)")
    return read_jsonl_resume(p)


def _rate(r: dict, e: str) -> tuple[float, int]:
    """(per-item success rate, number of samples): avg@n of a sampled row, the 0/1 flag of a greedy one."""
    if "sampled" in r:
        return float(r["sampled"]["success_rate"][e]), int(r["sampled"]["n_samples"])
    return float(bool(r["correct"][e])), 1


def compare_items(a_rows: list[dict], b_rows: list[dict], n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired comparison on the items both runs have: per extractor acc A/B, diff B - A with Newcombe's hybrid score
    95% CI (ci_lo/ci_hi; the paired bootstrap's beside it as ci_boot_lo/hi), exact p.

    Greedy rows: McNemar's exact test on the correct flags. Sampled rows (either run): the per-item success
    rates (avg@n) are compared, with the exact sign-flip test over items (= McNemar when both are 0/1)."""
    a_by = {r["id"]: r for r in a_rows}
    b_by = {r["id"]: r for r in b_rows}
    ids = [i for i in a_by if i in b_by]
    any_sampled = any("sampled" in a_by[i] or "sampled" in b_by[i] for i in ids)
    res = {
        "n": len(ids),
        "only_a": len(a_by) - len(ids),
        "only_b": len(b_by) - len(ids),
        "by_extractor": {},
        "unit": "per-item success rate (avg@n)" if any_sampled else "per-item correct flag",
    }
    for e in EXTRACTORS:
        if any_sampled:
            ra = [_rate(a_by[i], e) for i in ids]
            rb = [_rate(b_by[i], e) for i in ids]
            fa, fb = [x for x, _ in ra], [x for x, _ in rb]
            den = math.lcm(*([n for _, n in ra] + [n for _, n in rb])) if ids else 1
            sf = sign_flip_exact([x - y for x, y in zip(fa, fb)], denominator=den)
            test = {
                "mcnemar_p": sf["p"],
                "b01": sum(y > x for x, y in zip(fa, fb)),
                "b10": sum(x > y for x, y in zip(fa, fb)),
                "test": "sign-flip exact on success rates",
            }
        else:
            fa = [float(bool(a_by[i]["correct"][e])) for i in ids]
            fb = [float(bool(b_by[i]["correct"][e])) for i in ids]
            mc = mcnemar_exact([bool(x) for x in fa], [bool(x) for x in fb])
            test = {"mcnemar_p": mc["p"], "b01": mc["b01"], "b10": mc["b10"], "test": "McNemar exact"}
        bs = paired_bootstrap(fa, fb, n_boot=n_boot, seed=seed)
        ci = paired_diff_ci(fa, fb)  # never zero-width while items are few (a bootstrap is at 0 discordant)
        res["by_extractor"][e] = {
            "acc_a": sum(fa) / len(ids) if ids else 0.0,
            "acc_b": sum(fb) / len(ids) if ids else 0.0,
            "diff": bs["diff"],
            "ci_lo": ci["lo"],
            "ci_hi": ci["hi"],
            "ci_method": ci["method"],
            "ci_boot_lo": bs["lo"],
            "ci_boot_hi": bs["hi"],
            "p_bootstrap": bs["p"],
            **test,
        }
    return res

"""`run_eval`: generate on a benchmark, grade with every extractor, write per-item JSONL + summary JSON.

Output folder: items.jsonl (one row per problem, appended as batches finish: a rerun skips the items
already there) and summary.json (accuracy per extractor with Wilson 95% CIs, the protocol, model,
versions, time and tokens/s, and `data`: the benchmark file(s) read, path + sha256). The folder records
its config (yfpo.resume): a rerun with another model, benchmark file, protocol or sampling setting is refused,
not mixed in. `compare_items` pairs two runs item by item.

Beyond greedy: `samples`/`temperature` keep every sample per item with pass@k, maj@k and avg@n
(eval/sampled.py); a TaskSpec (eval/taskspec.py) evaluates any benchmark file, with per-group accuracy
and "no answer" golds graded as such; `protocol` picks a named prompting protocol (engine/prompts.py),
whose text is saved in the summary's protocol. Mean answer length (tokens) sits beside accuracy.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from yfpo.data.problems import Problem, benchmark_kind, benchmark_provenance, load_benchmark
from yfpo.engine.answers import EXTRACTORS, PRIMARY, grade
from yfpo.engine.generate import generate
from yfpo.engine.prompts import TEMPLATE_NAME, build_prompt, get_protocol
from yfpo.eval.sampled import item_metrics, sample_seed, summarize_sampled
from yfpo.eval.stats import accuracy, mcnemar_exact, paired_bootstrap, sign_flip_exact
from yfpo.utils import append_jsonl, atomic_write_json, now, read_jsonl_resume, versions

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
        "protocol": protocol,
    }
    if any("group" in r for r in rows):
        out["by_group"] = {
            g: {e: accuracy([r["correct"][e] for r in rows if r.get("group") == g]) for e in EXTRACTORS}
            for g in sorted({str(r.get("group")) for r in rows})
        }
    if any(r.get("no_answer") for r in rows):
        for part, keep in (("no_answer", True), ("answerable", False)):
            sub = [r for r in rows if bool(r.get("no_answer")) == keep]
            out[part] = {e: accuracy([r["correct"][e] for r in sub]) for e in EXTRACTORS}
    if rows and "samples" in rows[0]:
        out["sampled"] = summarize_sampled([r["sampled"] for r in rows], EXTRACTORS)
    return {**out, **(extra or {})}


def answer_length(rows: list[dict]) -> dict:
    """Mean generated tokens per answer (over every sample when sampled) and its mean over correct answers."""
    lens = [s["n_tokens"] for r in rows for s in r.get("samples", [r])]
    right = [s["n_tokens"] for r in rows for s in r.get("samples", [r]) if s["correct"][PRIMARY]]
    return {
        "mean_tokens": sum(lens) / len(lens) if lens else 0.0,
        "mean_tokens_correct": sum(right) / len(right) if right else None,
        "n": len(lens),
    }


# an output that declines to answer (graded as correct on a "no answer" gold under answer_kind none-allowed)
_ABSTAIN = re.compile(
    r"cannot be (?:answered|determined|solved)|can't be (?:answered|determined)|not answerable|"
    r"unanswerable|not enough information|insufficient information|missing information|"
    r"the answer is:?\s*none\b",
    re.IGNORECASE,
)
NO_ANSWER = "<no answer>"


def grade_item(output: str, gold: str, kind: str, no_answer_allowed: bool, gold_is_none: bool) -> dict:
    """grade() plus the "no answer" rule: under none-allowed, an output that says the question cannot be
    answered extracts as NO_ANSWER for every extractor; it is correct exactly when the gold is no-answer."""
    if not no_answer_allowed:
        return grade(output, gold, kind)
    abstains = bool(_ABSTAIN.search(output or ""))
    if gold_is_none:
        return {
            "extracted": {
                e: NO_ANSWER if abstains else v for e, v in grade(output, "0", "number")["extracted"].items()
            },
            "correct": {e: abstains for e in EXTRACTORS},
        }
    g = grade(output, gold, kind)
    if abstains:
        g = {"extracted": {e: NO_ANSWER for e in EXTRACTORS}, "correct": {e: False for e in EXTRACTORS}}
    return g


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


def _make_protocol(
    tok,
    *,
    protocol: str,
    shots: int,
    shots_file,
    max_new_tokens: int,
    batch_size: int,
    kind: str,
    samples: int,
    temperature: float,
    top_p: float,
    seed: int,
    spec,
) -> dict:
    proto = get_protocol(protocol)
    sampled = samples > 1 or temperature > 0
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
        "max_new_tokens": max_new_tokens,
        "extractors": list(EXTRACTORS),
        "primary": PRIMARY,
        "stop": "end-of-turn token",
        "batch_size": batch_size,
        "kind": kind,
    }
    if sampled:
        d.update(
            samples=samples,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            sample_seeds="sample_seed(seed, item id): per item, independent of batching/resume",
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
    if sampled:
        row["samples"] = [
            {"output": g.text, "n_tokens": g.n_tokens, "finish": g.finish, **gr} for g, gr in zip(gens, graded)
        ]
        row["sampled"] = item_metrics(row["samples"], EXTRACTORS)
    return row


def run_eval(
    model,
    bench: str,
    *,
    tokenizer=None,
    limit: int | None = None,
    shots: int = 0,
    out_dir=None,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    data_dir=None,
    backend: str = "auto",
    dtype: str = "float32",
    device: str = "cpu",
    bench_file: str | None = None,
    problems: list[Problem] | None = None,
    chunk: int | None = None,
    progress: bool = True,
    hub: bool | None = None,
    overwrite: bool = False,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    protocol: str = TEMPLATE_NAME,
    shots_file: str | None = None,
    spec=None,
) -> dict:
    """Evaluate `model` (alias/path, or a loaded model with tokenizer=) on `bench` (or on a TaskSpec `spec`).

    Greedy by default. samples > 1 or temperature > 0: `samples` sampled answers per item, each kept,
    seeded per item (sample_seed), with pass@k / maj@k / avg@n in the summary. Returns the summary."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for all items), got {limit}")
    if samples > 1 and temperature <= 0:
        raise ValueError(f"--samples {samples} needs --temperature > 0 (greedy samples would all be the same)")
    m, tok, model_name = _load(model, tokenizer, dtype, device)
    if spec is not None:
        from yfpo.eval.taskspec import load_task
        from yfpo.utils import sha256_file

        probs = problems if problems is not None else load_task(spec, limit=limit)
        kind, none_ok, bench = spec.grade_kind, spec.answer_kind == "none-allowed", spec.name
        data = [{"path": str(Path(spec.file).resolve()), "sha256": sha256_file(Path(spec.file))}]
    else:
        probs = (
            problems
            if problems is not None
            else load_benchmark(bench, data_dir=data_dir, limit=limit, path=bench_file, hub=hub)
        )
        kind, none_ok = benchmark_kind(bench), False
        data = benchmark_provenance(bench, data_dir, bench_file)
    if problems is not None:
        data = [{"path": None, "passed_in": len(probs)}]
    if not probs:
        raise ValueError(
            f"{(spec.file if spec is not None else bench_file) or bench}: no problems to evaluate "
            "(the benchmark file has no rows)"
        )
    sampled = samples > 1 or temperature > 0
    out = Path(out_dir) if out_dir else None
    if out:
        import dataclasses

        from yfpo.resume import claim, model_identity

        # items are graded one by one, so another limit only adds or leaves out items: not part of the record
        claim(
            out,
            "eval",
            {
                "model": model_identity(model_name),
                "bench": bench,
                "data": [d.get("sha256") for d in data],
                "shots": shots,
                "shots_file": shots_file,
                "max_new_tokens": max_new_tokens,
                "backend": backend,
                "dtype": dtype,
                "protocol": protocol,
                "samples": samples,
                "temperature": temperature,
                "top_p": top_p,
                "seed": seed,
                "spec": dataclasses.asdict(spec) if spec is not None else None,
            },
            overwrite=overwrite,
        )
    items_path = out / "items.jsonl" if out else None
    done = {r["id"]: r for r in read_jsonl_resume(items_path)} if items_path else {}
    todo = [p for p in probs if p.id not in done]
    prot = _make_protocol(
        tok,
        protocol=protocol,
        shots=shots,
        shots_file=shots_file,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        kind=kind,
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        spec=spec,
    )
    from yfpo.engine.backends import record

    prot["backend"] = record(backend, m)
    if out:
        _check_protocol(out, {**prot, "model": model_name, "bench": bench}, resuming=bool(done))
    rows = [done[p.id] for p in probs if p.id in done]
    t0 = time.time()
    new_tokens = 0
    # items per generate call (and per append to items.jsonl): wide enough for the fast backend's token-filled
    # batches of up to 128 rows, small enough that an interrupted run loses a few minutes at most
    chunk = chunk or max(batch_size * 4, EVAL_CHUNK)
    if sampled:
        chunk = 1  # one item per generate call: its seed depends on the item alone (resume-safe)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        prompts = [
            build_prompt(tok, p.question, shots=shots, data_dir=data_dir, protocol=protocol, shots_file=shots_file)
            for p in part
        ]
        if sampled:
            gens = generate(
                m,
                tok,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=max(batch_size, samples),
                backend=backend,
                progress=False,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                num_return_sequences=samples,
                seed=sample_seed(seed, part[0].id),
                desc=f"eval {bench}",
            )
            per_item = [gens]
        else:
            gens = generate(
                m,
                tok,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                backend=backend,
                progress=progress,
                desc=f"eval {bench}",
            )
            per_item = [[g] for g in gens]
        new_rows = [_row(p, prompt, gs, kind, none_ok, sampled) for p, prompt, gs in zip(part, prompts, per_item)]
        new_tokens += sum(g.n_tokens for gs in per_item for g in gs)
        if items_path:
            append_jsonl(items_path, new_rows)
        rows.extend(new_rows)
    elapsed = time.time() - t0
    order = {p.id: i for i, p in enumerate(probs)}
    rows.sort(key=lambda r: order.get(r["id"], 1 << 30))
    summary = summarize(
        rows,
        bench,
        model_name,
        prot,
        {
            "data": data,
            "versions": versions(),
            "date": now(),
            "time_s": round(elapsed, 2),
            "new_items": len(todo),
            "tokens_generated": new_tokens,
            "tokens_per_s": round(new_tokens / elapsed, 2) if elapsed > 0 and new_tokens else None,
            "problems_per_s": round(len(todo) / elapsed, 4) if elapsed > 0 and todo else None,
            "truncated": sum(1 for r in rows if r.get("truncated")),
        },
    )
    if out:
        atomic_write_json(out / "summary.json", summary)
    return summary


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
    """Paired comparison on the items both runs have: per extractor acc A/B, diff, bootstrap CI, exact p.

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
        res["by_extractor"][e] = {
            "acc_a": sum(fa) / len(ids) if ids else 0.0,
            "acc_b": sum(fb) / len(ids) if ids else 0.0,
            "diff": bs["diff"],
            "ci_lo": bs["lo"],
            "ci_hi": bs["hi"],
            "p_bootstrap": bs["p"],
            **test,
        }
    return res

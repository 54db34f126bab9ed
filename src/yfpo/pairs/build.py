"""`yfpo pairs build`: preference pairs from the model's own graded samples (SPEC section 6).

For each training question: sample k solutions (temperature / top-p / seed), grade each against the gold
answer with the evaluation grader, drop empty, truncated and duplicate samples, and pair correct with
incorrect samples (source "self"). When no sample is correct, the gold solution rewritten to the answer
format the prompt asks for ("... The answer is N.") is the chosen side (source "gold"). At most
`max_pairs_per_question` pairs per question. Optional Step-DPO pairs (steps.py) go to step_pairs.jsonl.

mode onpolicy (iterative RPO / self-generated pairs): only questions whose pass rate over the k samples is strictly
between 0 and 1 give pairs, the model's own correct answers vs its own wrong ones; no gold. Each question is sampled
from its own seed (sample_seed(seed, id): generate's seeds=), so a chunk can hold many questions and resume or
another batch_size changes none of the samples. The summary gives the pass-rate histogram in both modes.

Files in out_dir (append-only, resumable; a chunk of questions is finished when all its samples.jsonl rows are
written; the chunks and their seeds depend only on the question list, cfg.seed and batch_size // k):
    samples.jsonl      one row per question: id, question, gold, samples [{text, n_tokens, truncated, correct}], counts
    pairs.jsonl        {prompt, chosen, rejected, answer, source, id, question_id}   (yfpo.data.pairs format)
    step_pairs.jsonl   Step-DPO pairs (only with step_pairs: true)
    summary.json       questions, samples, sample accuracy, drops, pairs by source, config, versions
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from yfpo.engine.common import sample_seed
from yfpo.pairs.config import PairsConfig

SAMPLES, PAIRS, STEP_PAIRS, SUMMARY = "samples.jsonl", "pairs.jsonl", "step_pairs.jsonl", "summary.json"


# ----------------------------------------------------------------------------- pure parts


def gold_response(solution: str | None, answer: str) -> str | None:
    """Gold worked solution in the model's answer format: the solution (calculator annotations and any
    '#### N' line removed) followed by 'The answer is N.'. None when there is no worked solution."""
    import re

    if not solution or not solution.strip():
        return None
    text = re.sub(r"<<[^<>]*>>", "", solution)
    text = re.split(r"\n?####", text)[0].rstrip()
    return f"{text}\nThe answer is {answer}."


def _norm(text: str) -> str:
    return " ".join(text.split())


def clean_samples(samples: Sequence[dict]) -> tuple[list[dict], Counter]:
    """Keep usable samples: non-empty, not truncated, first of duplicates (whitespace-normalised).
    Returns the kept samples and a Counter of drop reasons (empty, truncated, duplicate)."""
    kept, seen, drops = [], set(), Counter()
    for s in samples:
        t = s["text"]
        if not t.strip():
            drops["empty"] += 1
        elif s.get("truncated"):
            drops["truncated"] += 1
        elif _norm(t) in seen:
            drops["duplicate"] += 1
        else:
            seen.add(_norm(t))
            kept.append(s)
    return kept, drops


def make_pairs(
    prompt: str,
    answer: str,
    samples: Sequence[dict],
    gold: str | None,
    *,
    max_pairs: int,
    gold_fallback: bool = True,
    seed: int = 0,
) -> list[dict]:
    """Pairs for one question from its graded samples (dicts with text, truncated, correct).

    Correct x incorrect combinations, in a seeded order that uses each distinct sample before reusing
    one; gold (when allowed and no sample is correct) vs each incorrect sample otherwise.
    """
    kept, _ = clean_samples(samples)
    good = [s["text"] for s in kept if s["correct"]]
    bad = [s["text"] for s in kept if not s["correct"]]
    if not bad or max_pairs <= 0:
        return []
    rng = random.Random(seed)
    if good:
        rng.shuffle(good)
        rng.shuffle(bad)
        combos = [(i, j) for i in range(len(good)) for j in range(len(bad))]
        # by diagonal: (0,0),(1,1),.. first, so distinct samples are used before any is reused
        combos.sort(key=lambda ij: ((ij[1] - ij[0]) % max(len(good), len(bad)), ij))
        chosen_rejected = [(good[i], bad[j], "self") for i, j in combos]
    elif gold_fallback and gold and all(_norm(gold) != _norm(b) for b in bad):
        rng.shuffle(bad)
        chosen_rejected = [(gold, b, "gold") for b in bad]
    else:
        return []
    out = []
    for c, r, src in chosen_rejected[:max_pairs]:
        if _norm(c) == _norm(r):
            continue
        out.append({"prompt": prompt, "chosen": c, "rejected": r, "answer": answer, "source": src})
    return out


def summarize(rows: Sequence[dict], pair_rows: Sequence[dict], step_rows: Sequence[dict] = ()) -> dict:
    """Counts over finished questions (samples.jsonl rows) and their pairs."""
    n_samples = sum(len(r["samples"]) for r in rows)
    n_correct = sum(s["correct"] for r in rows for s in r["samples"])
    drops: Counter = Counter()
    for r in rows:
        drops.update(r.get("drops", {}))
    by_source = Counter(p.get("source", "?") for p in pair_rows)
    any_correct = sum(any(s["correct"] for s in r["samples"]) for r in rows)
    hist = Counter(f"{sum(s['correct'] for s in r['samples'])}/{len(r['samples'])}" for r in rows)
    in_zone = sum(0 < sum(s["correct"] for s in r["samples"]) < len(r["samples"]) for r in rows)
    all_correct = sum(bool(r["samples"]) and all(s["correct"] for s in r["samples"]) for r in rows)
    return {
        "questions": len(rows),
        "samples": n_samples,
        "sample_accuracy": (n_correct / n_samples) if n_samples else None,
        "correct_samples": n_correct,
        "questions_with_a_correct_sample": any_correct,
        "questions_all_correct": all_correct,
        "questions_with_pairs": len({p.get("question_id") for p in pair_rows}),
        "dropped": dict(drops),
        "pairs": len(pair_rows),
        "pairs_by_source": dict(by_source),
        "pairs_share_by_source": {k: v / len(pair_rows) for k, v in by_source.items()} if pair_rows else {},
        # questions by correct samples out of k ("3/8": 3 of 8 correct), and those strictly between 0 and 1
        "pass_rate_histogram": dict(sorted(hist.items(), key=lambda kv: [int(x) for x in kv[0].split("/")])),
        "questions_pass_rate_between_0_and_1": in_zone,
        "step_pairs": len(step_rows),
        "truncated_samples": sum(s.get("truncated", False) for r in rows for s in r["samples"]),
        "mean_sample_tokens": (sum(s.get("n_tokens", 0) for r in rows for s in r["samples"]) / n_samples)
        if n_samples
        else None,
    }


def _chunk_seed(seed: int, chunk: int) -> int:
    return (seed * 1_000_003 + chunk) % (2**31 - 1)


# ----------------------------------------------------------------------------- the stage


def _chunks(n: int, per_chunk: int) -> list[list[int]]:
    """Generation batches over the whole question list: fixed by position alone, never by what is done."""
    return [list(range(i, min(i + per_chunk, n))) for i in range(0, n, per_chunk)]


def _resume(out: Path, ids: list[str], chunks: list[list[int]]) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows of the chunks finished whole. A chunk cut by a kill is redone whole (its rows and pairs are
    dropped), because a sampled batch depends on all its prompts: so a resumed run equals an uninterrupted one."""
    import json

    from yfpo.utils import atomic_write_text, read_jsonl_resume

    def rewrite(name: str, rows: list[dict], keep) -> list[dict]:
        good = [r for r in rows if keep(r)]
        if len(good) != len(rows):
            atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good))
        return good

    rows = read_jsonl_resume(out / SAMPLES)
    have = {r["id"] for r in rows}
    whole = {ids[i] for c in chunks if all(ids[i] in have for i in c) for i in c}
    rows = rewrite(SAMPLES, rows, lambda r: r["id"] in whole)
    kept = {
        name: rewrite(name, read_jsonl_resume(out / name), lambda p: p.get("question_id") in whole)
        for name in (PAIRS, STEP_PAIRS)
    }
    return rows, kept[PAIRS], kept[STEP_PAIRS]


def build_pairs(
    cfg: PairsConfig,
    *,
    generate_fn: Callable[..., list] | None = None,
    template_fn: Callable[[str], str] | None = None,  # question -> templated prompt
    grade_fn: Callable[[str, str], bool] | None = None,
    message_fn: Callable[[str], str] | None = None,
    problems: list | None = None,
    overwrite: bool = False,
) -> Path:
    """Run the pairs stage; returns out_dir/pairs.jsonl. Resumable: finished chunks are skipped, and a
    resumed run writes the same bytes as an uninterrupted one. A folder made by another config is refused
    (yfpo.resume) unless overwrite, which empties it.

    generate_fn(prompts, **generate kwargs), template_fn(question) -> chat-templated prompt (the user turn
    is message_fn(question) inside it) and
    grade_fn(output, gold) -> bool and message_fn(question) -> user message default to yfpo.eval
    (generate / build_prompt / is_correct / format_user_message) with cfg.model loaded; tests inject fakes. `problems` overrides the benchmark questions.
    Long: the stage in order (claim, questions, chunked sampling with resume, grading, pairing, step pairs, summary);
    the chunks share the resume state. Next to split (docs/ARCHITECTURE.md)."""
    from yfpo.config import save_config, to_dict
    from yfpo.data.problems import benchmark_kind, load_benchmark
    from yfpo.pairs.steps import step_pair
    from yfpo.resume import claim
    from yfpo.utils import append_jsonl, atomic_write_json, atomic_write_text, now, progress, versions
    from yfpo.version import __version__

    t0 = time.time()
    out = Path(cfg.out_dir)
    cfg.validate()
    claim(out, "pairs", to_dict(cfg), overwrite=overwrite)
    save_config(cfg, out / "config.yaml")

    if problems is None:
        problems = load_benchmark(cfg.bench, cfg.data_dir, None, path=cfg.bench_file)
    problems = problems[cfg.offset :]
    if cfg.limit is not None:
        problems = problems[: cfg.limit]
    if not problems:
        raise ValueError(f"pairs: no questions in {cfg.bench} after offset {cfg.offset} / limit {cfg.limit}")

    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(
            f"pairs: question id {dup!r} occurs twice in {cfg.bench_file or cfg.bench}; ids must be unique"
        )
    onpolicy = cfg.mode == "onpolicy"
    chunks = _chunks(len(problems), max(1, cfg.batch_size // max(cfg.k, 1)))
    rows, pair_rows, step_rows = _resume(out, ids, chunks)
    done = {r["id"] for r in rows}
    todo_idx = [i for i, p in enumerate(problems) if p.id not in done]

    kind = benchmark_kind(cfg.bench)
    if message_fn is None:
        from yfpo.engine.prompts import format_user_message as message_fn
    if generate_fn is None or template_fn is None:
        from yfpo.engine.generate import generate
        from yfpo.engine.prompts import build_prompt
        from yfpo.models.loading import load_model

        if todo_idx:
            from yfpo.engine.backends import pin

            model, tok = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
            pin(out, cfg.backend, model)  # the samples of one folder come from one backend
            if generate_fn is None:

                def generate_fn(prompts, **kw):
                    return generate(
                        model, tok, prompts, batch_size=cfg.batch_size, backend=cfg.backend, progress=False, **kw
                    )

            if template_fn is None:

                def template_fn(q):
                    return build_prompt(tok, q)

    if grade_fn is None:
        from yfpo.grading import is_correct

        def grade_fn(output, gold):
            return is_correct(output, gold, kind)

    bar = progress(total=len(problems), desc="pairs: sample+grade", unit="q", disable=not cfg.progress)
    bar.update(len(problems) - len(todo_idx))
    for c, idx in enumerate(chunks):
        if all(problems[i].id in done for i in idx):
            continue
        qs = [problems[i] for i in idx]
        prompts = [template_fn(p.question) for p in qs]
        seed = _chunk_seed(cfg.seed, c)
        per_question = {}
        if onpolicy:
            per_question["seeds"] = [sample_seed(cfg.seed, p.id) for p in qs]
        gens = generate_fn(
            prompts,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            num_return_sequences=cfg.k,
            seed=seed,
            **per_question,
        )
        if len(gens) != len(qs) * cfg.k:
            raise ValueError(f"pairs: generate returned {len(gens)} sequences for {len(qs)} prompts x k={cfg.k}")
        for qi, p in enumerate(qs):
            user = message_fn(p.question)
            samples = [
                {
                    "text": g.text,
                    "n_tokens": int(g.n_tokens),
                    "truncated": bool(g.truncated),
                    "correct": bool(g.text.strip()) and bool(grade_fn(g.text, p.answer)),
                }
                for g in gens[qi * cfg.k : (qi + 1) * cfg.k]
            ]
            _, drops = clean_samples(samples)
            gold = gold_response(p.solution, p.answer)
            new = make_pairs(
                user,
                p.answer,
                samples,
                gold,
                max_pairs=cfg.max_pairs_per_question,
                gold_fallback=cfg.gold_fallback and not onpolicy,
                seed=_chunk_seed(seed, qi) if not onpolicy else per_question["seeds"][qi],
            )
            for n, pr in enumerate(new):
                pr.update(id=f"{p.id}-p{n}", question_id=p.id)
            steps_new, step_info = [], []
            if cfg.step_pairs:
                kept, _ = clean_samples(samples)
                wrong = [s for s in kept if not s["correct"]][: cfg.step_samples_per_question]
                for si, s in enumerate(wrong):
                    sp, info = step_pair(
                        user,
                        prompts[qi],
                        s["text"],
                        p.answer,
                        generate_fn=generate_fn,
                        grade_fn=grade_fn,
                        n_rollouts=cfg.step_rollouts,
                        max_steps=cfg.step_max_steps,
                        max_new_tokens=cfg.step_max_new_tokens,
                        threshold=cfg.step_threshold,
                        seed=_chunk_seed(seed + 7, qi * 31 + si),
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                    )
                    step_info.append(info)
                    if sp is not None:
                        sp.update(id=f"{p.id}-s{si}", question_id=p.id)
                        steps_new.append(sp)
            if new:
                append_jsonl(out / PAIRS, new)
            if steps_new:
                append_jsonl(out / STEP_PAIRS, steps_new)
            row = {
                "id": p.id,
                "question": p.question,
                "gold": p.answer,
                "prompt": user,
                "seed": per_question["seeds"][qi] if onpolicy else seed,
                "samples": samples,
                "drops": dict(drops),
                "n_pairs": len(new),
            }
            if cfg.step_pairs:
                row["step_probe"] = step_info
            append_jsonl(out / SAMPLES, [row])  # the question is finished now
            rows.append(row)
            pair_rows.extend(new)
            step_rows.extend(steps_new)
            bar.update(1)
    bar.close()
    if not (out / PAIRS).exists():
        atomic_write_text(out / PAIRS, "")
    summary = summarize(rows, pair_rows, step_rows)
    summary.update(
        bench=cfg.bench,
        model=cfg.model,
        config=to_dict(cfg),
        time_s=round(time.time() - t0, 2),
        date=now(),
        tool_version=__version__,
        versions=versions(),
        files={"samples": SAMPLES, "pairs": PAIRS, **({"step_pairs": STEP_PAIRS} if cfg.step_pairs else {})},
        backend=json.loads((out / "backend.json").read_text()) if (out / "backend.json").exists() else None,
    )
    atomic_write_json(out / SUMMARY, summary)
    return out / PAIRS

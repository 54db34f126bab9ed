"""Pair discrimination: how often the model prefers the correct solution of a held-out pair.

For each (question, correct, incorrect) pair, the model scores both solutions by length-normalised
log-likelihood (mean log-prob per response token) after the chat prompt of the question; the pair counts
as discriminated when the correct one scores higher. No generation is needed, so it is cheap and
less noisy than accuracy on a small slice. Default pairs: ../shared/data/gsm8k_model_solution_pairs
(GSM8K *test* questions — never train on them when you evaluate on GSM8K test).
"""

from __future__ import annotations

from pathlib import Path

from yfpo.engine.prompts import build_prompt
from yfpo.eval.loglik import response_logprobs
from yfpo.eval.stats import accuracy
from yfpo.utils import atomic_write_json, now


def _pair_id(p: dict, i: int) -> str:
    """A unique, stable id per pair (question_index alone repeats: one question gives up to 4 pairs)."""
    if p.get("id") is not None:
        return str(p["id"])
    if p.get("question_index") is not None and p.get("chosen_source") and p.get("rejected_source"):
        return f"q{p['question_index']}:{p['chosen_source']}>{p['rejected_source']}"
    return f"pair-{i}"


def run_discrimination(
    model,
    tokenizer,
    pairs: list[dict] | None = None,
    *,
    limit: int | None = None,
    out_dir=None,
    batch_size: int = 8,
    data_dir=None,
    progress: bool = True,
    max_length: int = 1024,
) -> dict:
    from yfpo.data.pairs import load_solution_pairs

    if isinstance(model, str):
        from yfpo.models import load_model

        model, tokenizer = load_model(model)
    if pairs is None:
        pairs = load_solution_pairs(data_dir=data_dir, limit=limit)
    elif limit:
        pairs = pairs[:limit]
    prompts = [build_prompt(tokenizer, p["question"]) for p in pairs]
    both = response_logprobs(
        model,
        tokenizer,
        prompts + prompts,
        [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
        batch_size=batch_size,
        progress=progress,
        desc="discrimination",
        max_length=max_length,
    )
    n = len(pairs)
    items, flags = [], []
    for i, p in enumerate(pairs):
        (lc, nc), (lr, nr) = both[i], both[n + i]
        sc, sr = lc / max(nc, 1), lr / max(nr, 1)
        ok = sc > sr
        flags.append(ok)
        items.append(
            {
                "id": _pair_id(p, i),
                "question_index": p.get("question_index"),
                "chosen_score": sc,
                "rejected_score": sr,
                "chosen_tokens": nc,
                "rejected_tokens": nr,
                "correct": ok,
            }
        )
    acc = accuracy(flags)
    summary = {
        "bench": "discrimination",
        "n": n,
        "accuracy": acc["acc"],
        "lo": acc["lo"],
        "hi": acc["hi"],
        "n_correct": acc["n_correct"],
        "score": "mean log-prob per response token",
        "model": getattr(model.config, "name_or_path", ""),
        "date": now(),
    }
    if out_dir:
        out = Path(out_dir)
        import json

        from yfpo.utils import atomic_write_text

        atomic_write_text(out / "items.jsonl", "".join(json.dumps(r) + "\n" for r in items))
        atomic_write_json(out / "discrimination.json", summary)
    return summary

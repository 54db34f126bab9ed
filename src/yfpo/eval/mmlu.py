"""General-knowledge retention: MMLU multiple choice by log-likelihood of the answer letters.

Zero-shot: the question and lettered choices in the user turn, "Answer with the letter only."; the model's
choice is the letter with the highest log-probability as the assistant's first token(s). Reported
separately: non-math subjects of MMLU test (subcategory != "math"), and the MMLU-Redux subset whose
`error_type` is "ok" (annotated as correct), as the FDT paper reports. `per_subject` items are taken in file
order, so a limit is deterministic.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from yfpo.data.problems import DataNotFoundError, candidate_data_dirs, find_data_file, read_jsonl
from yfpo.eval.loglik import next_token_logprobs, response_logprobs
from yfpo.eval.stats import accuracy
from yfpo.utils import atomic_write_json, now

LETTERS = "ABCD"


def _rows(rel: str, data_dir=None) -> list[dict]:
    p = find_data_file(rel, data_dir)
    if p is None:
        raise DataNotFoundError(
            f"{rel} not found; looked in: " + "; ".join(str(d / rel) for d in candidate_data_dirs(data_dir))
        )
    return [o for _, o in read_jsonl(p)]


DATA_FILES = ("mmlu/test.jsonl", "mmlu_redux/mmlu_redux.jsonl")  # the two parts: non-math test, Redux "ok"


def _take(rows: list[dict], per_subject: int | None) -> list[dict]:
    if not per_subject:
        return rows
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        if seen[r["subject"]] < per_subject:
            seen[r["subject"]] += 1
            out.append(r)
    return out


def mmlu_prompt(tokenizer, row: dict) -> str:
    choices = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
    subj = row["subject"].replace("_", " ")
    user = f"The following is a multiple choice question about {subj}.\n\n{row['question']}\n{choices}\nAnswer with the letter only."
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    return user + "\nAnswer:"


def letter_token_ids(tokenizer, letters: str = LETTERS) -> list[int] | None:
    """The token id of each answer letter when each is exactly one token (as the response), else None."""
    ids = [tokenizer(L, add_special_tokens=False).input_ids for L in letters]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


def score_rows(model, tokenizer, rows: list[dict], batch_size: int = 8, progress: bool = True) -> list[bool]:
    """Per row: is the highest-log-probability answer letter the gold one (ties -> the first letter)."""
    prompts = [mmlu_prompt(tokenizer, r) for r in rows]
    single = letter_token_ids(tokenizer)
    if single is not None:  # one forward pass per question, all letters read off the last position
        lps = next_token_logprobs(
            model, tokenizer, prompts, single, batch_size=batch_size, progress=progress, desc="mmlu"
        )
        scores_all = [s[: len(r["choices"])] for s, r in zip(lps, rows)]
    else:  # multi-token letters: score each letter as a response
        ps, resps = [], []
        for p, r in zip(prompts, rows):
            for L in LETTERS[: len(r["choices"])]:
                ps.append(p)
                resps.append(L)
        lp = response_logprobs(model, tokenizer, ps, resps, batch_size=batch_size, progress=progress, desc="mmlu")
        scores_all, k = [], 0
        for r in rows:
            m = len(r["choices"])
            scores_all.append([lp[k + j][0] for j in range(m)])
            k += m
    return [max(range(len(sc)), key=lambda j: sc[j]) == int(r["answer"]) for sc, r in zip(scores_all, rows)]


def run_mmlu(
    model,
    tokenizer=None,
    *,
    per_subject: int | None = 5,
    out_dir=None,
    data_dir=None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    if isinstance(model, str):
        from yfpo.models import load_model

        model, tokenizer = load_model(model)
    test = [r for r in _rows(DATA_FILES[0], data_dir) if r.get("subcategory") != "math"]
    redux = [r for r in _rows(DATA_FILES[1], data_dir) if r.get("error_type") == "ok"]
    res = {
        "bench": "mmlu",
        "protocol": {"shots": 0, "scoring": "log-prob of the answer letter", "per_subject": per_subject},
        "model": getattr(model.config, "name_or_path", ""),
        "date": now(),
    }
    res["items"] = {}
    for name, rows in (("non_math", _take(test, per_subject)), ("redux_ok", _take(redux, per_subject))):
        flags = score_rows(model, tokenizer, rows, batch_size=batch_size, progress=progress)
        res[name] = accuracy(flags)
        # per question (for paired tests between models): id, subject, whether the gold letter scored highest
        res["items"][name] = [
            {"id": str(r.get("id", f"{name}/{i}")), "subject": r["subject"], "correct": f}
            for i, (r, f) in enumerate(zip(rows, flags))
        ]
    if out_dir:
        atomic_write_json(Path(out_dir) / "mmlu.json", res)
    return res

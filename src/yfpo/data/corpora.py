"""Math and general-domain (contrast) corpora for neuron discovery: (prompt, response) records.

- Math: GSM8K (train by default; test for held-out checks): user turn = the question, assistant
  turn = the gold solution with calculator annotations ``<<...>>`` removed, ending "The answer is N.".
- Contrast: general-domain text from ../shared/data with math-like items filtered out by the regex the
  data READMEs describe: ``self_instruct_human`` (instruction [+ input] -> human reference output) and
  ``dolly15k_prompts`` (instruction -> the Wikipedia context passage, teacher-forced; Dolly has no
  responses here). The two are interleaved so any prefix of the corpus mixes both sources.

All readers are deterministic given (n, seed).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The math-like filter of self_instruct_human/README.md and dolly15k_prompts/README.md.
MATH_LIKE = re.compile(
    r"math|arithmetic|algebra|geometry|calculus|equation|integral|derivative|calculate|solve|\d+ ?[-+*/^] ?\d+",
    re.IGNORECASE,
)

CONTRAST_SOURCES = ("self_instruct", "dolly")


@dataclass
class TextRecord:
    id: str
    prompt: str  # user-turn text
    response: str  # assistant-turn text (teacher-forced)
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def _data_dir(data_dir: str | Path | None) -> Path:
    """The first data folder (same search order as load_benchmark) that holds the contrast sources."""
    from yfpo.data.problems import candidate_data_dirs

    dirs = candidate_data_dirs(data_dir)
    for d in dirs:
        if (Path(d) / "self_instruct_human").is_dir() or (Path(d) / "dolly15k_prompts").is_dir():
            return Path(d)
    raise FileNotFoundError(
        "contrast corpus: no data folder with self_instruct_human/ or dolly15k_prompts/ among "
        + ", ".join(map(str, dirs))
        + "; pass --data-dir or set YFPO_DATA_DIR"
    )


def is_math_like(text: str) -> bool:
    """True when `text` matches the README math filter (math words or ``a <op> b`` arithmetic)."""
    return bool(MATH_LIKE.search(text))


def gsm8k_solution_response(solution: str, answer: str) -> str:
    """GSM8K gold solution as an assistant turn: calculator annotations removed, ends 'The answer is N.'."""
    text = re.sub(r"<<[^>]*>>", "", solution)
    text = re.sub(r"\n?####.*$", "", text, flags=re.S).strip()
    return f"{text}\nThe answer is {answer}."


def math_corpus(n: int, seed: int = 0, data_dir: str | Path | None = None, split: str = "train") -> list[TextRecord]:
    """`n` GSM8K (question, solution) records, shuffled by `seed`; split "train" or "test"."""
    from yfpo.data.problems import load_benchmark

    name = {"train": "gsm8k_train", "test": "gsm8k"}.get(split)
    if name is None:
        raise ValueError(f"math_corpus: split must be 'train' or 'test', got {split!r}")
    probs = load_benchmark(name, data_dir=str(data_dir) if data_dir else None)
    probs = [p for p in probs if p.solution]
    rng = random.Random(seed)
    order = list(range(len(probs)))
    rng.shuffle(order)
    if n > len(order):
        raise ValueError(f"math_corpus: asked for {n} records, {name} has {len(order)}")
    out = []
    for i in order[:n]:
        p = probs[i]
        out.append(TextRecord(p.id, p.question, gsm8k_solution_response(p.solution, p.answer), name))
    return out


def _self_instruct(root: Path) -> list[TextRecord]:
    out = []
    for fname in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        path = root / "self_instruct_human" / fname
        if not path.exists():
            raise FileNotFoundError(
                f"contrast corpus: {path} not found (see ../shared/data/self_instruct_human/README.md)"
            )
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                inst = obj["instances"][0]
                prompt = obj["instruction"] + (("\n\n" + inst["input"]) if inst.get("input") else "")
                response = inst["output"]
                rid = obj["id"]
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
                raise ValueError(f"{path}:{line_no}: expected instruction + instances[0].input/output ({e})") from None
            if not response.strip() or is_math_like(prompt + "\n" + response):
                continue
            out.append(TextRecord(f"self_instruct-{rid}", prompt, response.strip(), "self_instruct_human"))
    return out


def _dolly(root: Path, max_chars: int = 1500) -> list[TextRecord]:
    path = root / "dolly15k_prompts" / "dolly15k_prompts.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"contrast corpus: {path} not found (see ../shared/data/dolly15k_prompts/README.md)")
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            inst, ctx, idx = obj["instruction"], obj["context"], obj["idx"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}:{line_no}: expected fields idx, instruction, context ({e})") from None
        if not ctx.strip() or is_math_like(inst + "\n" + ctx):
            continue
        out.append(
            TextRecord(
                f"dolly-{idx}", inst, ctx.strip()[:max_chars], "dolly15k_prompts", {"teacher_forced": "context passage"}
            )
        )
    return out


def contrast_corpus(
    n: int, seed: int = 0, data_dir: str | Path | None = None, sources: tuple[str, ...] = CONTRAST_SOURCES
) -> list[TextRecord]:
    """`n` non-math (prompt, response) records, sources interleaved, each shuffled by `seed`."""
    root = _data_dir(data_dir)
    pools: list[list[TextRecord]] = []
    for s in sources:
        if s == "self_instruct":
            pool = _self_instruct(root)
        elif s == "dolly":
            pool = _dolly(root)
        else:
            raise ValueError(f"contrast_corpus: unknown source {s!r}; known: {', '.join(CONTRAST_SOURCES)}")
        random.Random(seed).shuffle(pool)
        pools.append(pool)
    out: list[TextRecord] = []
    i = 0
    while len(out) < n and any(i < len(p) for p in pools):
        for p in pools:
            if i < len(p) and len(out) < n:
                out.append(p[i])
        i += 1
    if len(out) < n:
        raise ValueError(f"contrast_corpus: asked for {n} records, only {len(out)} non-math records available")
    return out

"""A train / validation / test split over the easy word-problem sets (the default model's zone), deduplicated.

Pool: MAWPS (AddSub, MultiArith, SingleEq, SingleOp) and ASDiv, items with a numeric answer. Held out whole, as
evaluation sets the split is cleaned against: SVAMP (out of distribution: variations of ASDiv-A items) and GSM8K
test (hard). Two problems count as the same when
  text     their normalised texts are equal (lower case, number words as digits, only letters and numbers), or
  numbers  they hold the same multiset of numbers (at least two) and share at least JACCARD of their words (the
           same story with its numbers: SVAMP's variations, MAWPS/ASDiv copies with other wording); two unrelated
           problems that happen to use "7" and "2" share few words and are kept apart.
A pool item like an evaluation item is dropped ("evaluation set"); pool items like each other form a cluster of
which the first (in SOURCES order) is kept ("duplicate in pool"). The kept items are ordered by a seeded hash of
their ids and cut into test, validation and train, so the split depends only on the data files, the seed and the
sizes. The contamination report lists every dropped item, the rule and the item it matched.

Benchmarks `wordprob_train`, `wordprob_val`, `wordprob_test` (yfpo.data.problems) load the parts (built in memory,
default seed and sizes); `yfpo data split --out DIR` writes them as JSONL files with the report.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from yfpo.data.problems import SPLIT_HOOKS, Problem, benchmark_provenance, load_benchmark

SOURCES = ("mawps_addsub", "mawps_multiarith", "mawps_singleeq", "mawps_singleop", "asdiv")
EVAL_SETS = ("svamp", "gsm8k")
SEED, N_TEST, N_VAL = 0, 1000, 400
JACCARD = 0.3
PARTS = ("train", "val", "test")

_NUM_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_NUM_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80"})
_NUM_WORDS.update({"ninety": "90", "hundred": "100", "thousand": "1000", "dozen": "12", "half": "0.5"})
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+")


def _num(s: str) -> str:
    v = float(s.replace(",", ""))
    return str(int(v)) if v == int(v) else repr(v)


def _tokens(text: str) -> list[str]:
    """Lower-case words and numbers (numbers normalised, number words as digits)."""
    out = []
    for t in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+|[a-z]+", text.lower()):
        out.append(_num(t) if t[0].isdigit() or t[0] == "." else _NUM_WORDS.get(t, t))
    return out


@dataclass
class Keys:
    text: str
    numbers: tuple[str, ...]
    words: frozenset[str] = field(default_factory=frozenset)


def keys(question: str) -> Keys:
    toks = _tokens(question)
    nums = tuple(sorted(t for t in toks if t[0].isdigit()))
    return Keys(" ".join(toks), nums, frozenset(t for t in toks if not t[0].isdigit() and len(t) > 2))


def same(a: Keys, b: Keys) -> str | None:
    """The rule by which two problems are the same ("text" or "numbers"), or None."""
    if a.text == b.text:
        return "text"
    if len(a.numbers) >= 2 and a.numbers == b.numbers:
        union = len(a.words | b.words)
        if union and len(a.words & b.words) / union >= JACCARD:
            return "numbers"
    return None


class _Index:
    """Problems by normalised text and by number multiset, for `match`."""

    def __init__(self):
        self.by_text: dict[str, str] = {}
        self.by_nums: dict[tuple, list[tuple[str, Keys]]] = {}

    def add(self, pid: str, k: Keys) -> None:
        self.by_text.setdefault(k.text, pid)
        if len(k.numbers) >= 2:
            self.by_nums.setdefault(k.numbers, []).append((pid, k))

    def match(self, k: Keys) -> tuple[str, str] | None:
        """(rule, id of the first problem it matches) or None."""
        if k.text in self.by_text:
            return "text", self.by_text[k.text]
        for pid, other in self.by_nums.get(k.numbers, []):
            rule = same(k, other)
            if rule:
                return rule, pid
        return None


def _order_key(seed: int, pid: str) -> bytes:
    return hashlib.sha256(f"{seed}|{pid}".encode()).digest()


def build_split(data_dir=None, seed: int = SEED, n_test: int = N_TEST, n_val: int = N_VAL) -> tuple[dict, dict]:
    """({"train"|"val"|"test": [Problem]}, contamination report). Ids are prefixed by their source
    ("mawps_singleop-3", "asdiv:nluds-0001") so they are unique across the pool."""
    if n_test < 1 or n_val < 1:
        raise ValueError(f"split: n_test and n_val must be >= 1, got {n_test} and {n_val}")
    evals = _Index()
    for name in EVAL_SETS:
        for p in load_benchmark(name, data_dir):
            evals.add(f"{name}:{p.id}", keys(p.question))
    pool = _Index()
    kept: list[Problem] = []
    dropped: list[dict] = []
    for name in SOURCES:
        for p in load_benchmark(name, data_dir):
            pid = p.id if p.id.startswith(name) else f"{name}:{p.id}"
            row = {"id": pid, "source": name, "question": p.question}
            if not re.fullmatch(r"-?\d+(?:\.\d+)?", p.answer):
                dropped.append({**row, "why": "answer not a number", "answer": p.answer})
                continue
            k = keys(p.question)
            hit = evals.match(k)
            if hit:
                dropped.append({**row, "why": "evaluation set", "rule": hit[0], "matches": hit[1]})
                continue
            hit = pool.match(k)
            if hit:
                dropped.append({**row, "why": "duplicate in pool", "rule": hit[0], "matches": hit[1]})
                continue
            pool.add(pid, k)
            kept.append(Problem(pid, p.question, p.answer, p.solution, name, p.meta))
    if n_test + n_val >= len(kept):
        raise ValueError(f"split: {len(kept)} clean items cannot give {n_test} test + {n_val} val + a train part")
    kept.sort(key=lambda p: _order_key(seed, p.id))
    parts = {"test": kept[:n_test], "val": kept[n_test : n_test + n_val], "train": kept[n_test + n_val :]}
    why = Counter(d["why"] if "rule" not in d else f"{d['why']} ({d['rule']})" for d in dropped)
    by_eval = Counter(d["matches"].split(":")[0] for d in dropped if d["why"] == "evaluation set")
    report = {
        "seed": seed,
        "sizes": {k: len(v) for k, v in parts.items()},
        "by_source": {k: dict(Counter(p.source for p in v)) for k, v in parts.items()},
        "pool": SOURCES,
        "evaluation_sets": EVAL_SETS,
        "rules": {
            "text": "normalised texts equal",
            "numbers": f"same number multiset (>= 2) and word Jaccard >= {JACCARD}",
        },
        "dropped_counts": dict(why),
        "dropped_by_evaluation_set": dict(by_eval),
        "dropped": dropped,
        "data": [r for n in (*SOURCES, *EVAL_SETS) for r in benchmark_provenance(n, data_dir)],
    }
    return parts, report


_CACHE: dict = {}


def load_part(part: str, data_dir=None) -> list:
    """One part of the default split (seed SEED, N_TEST test and N_VAL validation items), built once per process."""
    if part not in PARTS:
        raise ValueError(f"split part {part!r}: expected one of {', '.join(PARTS)}")
    key = str(data_dir)
    if key not in _CACHE:
        _CACHE[key] = build_split(data_dir, SEED, N_TEST, N_VAL)[0]
    return list(_CACHE[key][part])


def write_split(out_dir, data_dir=None, seed: int = SEED, n_test: int = N_TEST, n_val: int = N_VAL) -> dict:
    """Write train/val/test.jsonl (id, question, answer, source: readable by --bench-file) and contamination.json
    into out_dir; returns the report without its per-item list."""
    import json

    from yfpo.utils import atomic_write_json, atomic_write_text

    parts, report = build_split(data_dir, seed, n_test, n_val)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, probs in parts.items():
        atomic_write_text(
            out / f"{name}.jsonl",
            "".join(
                json.dumps({"id": p.id, "question": p.question, "answer": p.answer, "source": p.source}) + "\n"
                for p in probs
            ),
        )
    atomic_write_json(out / "contamination.json", report)
    return {k: v for k, v in report.items() if k != "dropped"}


SPLIT_HOOKS.update(load_part=load_part, sources=(*SOURCES, *EVAL_SETS))  # the wordprob_* benchmarks read through these

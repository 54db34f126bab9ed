"""Preference-pair JSONL formats and their validation.

Plain pairs (one JSON object a line):
    {"prompt": str, "chosen": str, "rejected": str, "answer"?: str, "source"?: str, ...extra kept}
Step-DPO pairs:
    {"prompt": str, "initial_reason_steps": str, "chosen": str, "rejected": str, "answer"?: str, ...}

`prompt` is the raw question text (the trainer applies the chat template), `chosen` / `rejected`
are assistant responses. For Step-DPO, `initial_reason_steps` is the shared correct prefix and
`chosen` / `rejected` are single next steps (no end-of-sequence token is appended to them).
A malformed line fails with the file, the line number, the field and what was expected.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from yfpo.data.problems import DataFormatError, read_jsonl

PLAIN_REQUIRED = ("prompt", "chosen", "rejected")
STEP_REQUIRED = ("prompt", "initial_reason_steps", "chosen", "rejected")
OPTIONAL_STR = ("answer", "source", "id")


@dataclass
class Pair:
    prompt: str
    chosen: str
    rejected: str
    answer: str | None = None
    source: str | None = None
    initial_reason_steps: str | None = None  # set => Step-DPO pair
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_step(self) -> bool:
        return self.initial_reason_steps is not None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        d.update(self.extra)
        return d


def detect_format(obj: dict) -> str:
    return "step" if "initial_reason_steps" in obj else "plain"


def validate_pair(obj: dict, where: str, fmt: str | None = None) -> Pair:
    """One decoded line -> Pair, or DataFormatError('<where>: field ...: expected ...')."""
    fmt = fmt or detect_format(obj)
    required = STEP_REQUIRED if fmt == "step" else PLAIN_REQUIRED
    for key in required:
        if key not in obj:
            raise DataFormatError(f"{where}: missing field {key!r} (a {fmt} pair needs {', '.join(required)})")
        if not isinstance(obj[key], str):
            raise DataFormatError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
    for key in ("prompt", "chosen", "rejected"):
        if not obj[key].strip():
            raise DataFormatError(f"{where}: field {key!r} is empty; expected non-empty text")
    if obj["chosen"] == obj["rejected"]:
        raise DataFormatError(
            f"{where}: fields 'chosen' and 'rejected' are identical; a pair needs two different responses"
        )
    for key in OPTIONAL_STR:
        if key in obj and obj[key] is not None and not isinstance(obj[key], (str, int, float)):
            raise DataFormatError(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
    extra = {k: v for k, v in obj.items() if k not in (*STEP_REQUIRED, *OPTIONAL_STR)}
    ans = obj.get("answer")
    return Pair(
        prompt=obj["prompt"],
        chosen=obj["chosen"],
        rejected=obj["rejected"],
        answer=None if ans is None else str(ans),
        source=obj.get("source"),
        initial_reason_steps=obj.get("initial_reason_steps") if fmt == "step" else None,
        extra=extra,
    )


def load_pairs(path: str | os.PathLike, fmt: str | None = None, limit: int | None = None) -> list[Pair]:
    """Read and validate a pairs JSONL file. `fmt` in {None (from the first line), 'plain', 'step'}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    pairs: list[Pair] = []
    first = None  # (line, format) of the first row: one file holds one format
    for n, obj in read_jsonl(path):
        here = detect_format(obj)
        if first is None:
            first = (n, here)
        elif here != first[1]:
            raise DataFormatError(
                f"{path}:{n}: a {here} pair in a file whose line {first[0]} is a {first[1]} pair "
                "(Step-DPO rows have 'initial_reason_steps'); one file holds one format: split it"
            )
        pairs.append(validate_pair(obj, f"{path}:{n}", fmt or here))
        if limit and len(pairs) >= limit:
            break
    if not pairs:
        raise DataFormatError(f"{path}: no pairs (the file is empty)")
    return pairs


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair | dict], append: bool = False) -> int:
    """Write pairs as JSONL (atomically unless appending). Returns the count written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [p.to_dict() if isinstance(p, Pair) else p for p in pairs]
    if append:
        with open(path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    else:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    return len(rows)


def load_solution_pairs(
    path: str | os.PathLike | None = None, data_dir: str | None = None, limit: int | None = None
) -> list[dict]:
    """Held-out (correct, incorrect) solution pairs for pair discrimination.

    Default: ../shared/data/gsm8k_model_solution_pairs/test_pairs.jsonl (question, chosen, rejected, ...).
    Returns dicts with keys question, chosen, rejected (and whatever else the file has).
    """
    from yfpo.data.problems import DataNotFoundError, candidate_data_dirs, find_data_file

    rel = "gsm8k_model_solution_pairs/test_pairs.jsonl"
    p = Path(path) if path else find_data_file(rel, data_dir)
    if p is None:
        raise DataNotFoundError(
            "solution pairs not found; looked in: " + "; ".join(str(d / rel) for d in candidate_data_dirs(data_dir))
        )
    out = []
    for n, o in read_jsonl(p):
        q = o.get("question", o.get("prompt"))
        for key, val in (("question", q), ("chosen", o.get("chosen")), ("rejected", o.get("rejected"))):
            if not isinstance(val, str) or not val.strip():
                raise DataFormatError(f"{p}:{n}: field {key!r} must be a non-empty string")
        out.append({**o, "question": q})
        if limit and len(out) >= limit:
            break
    return out

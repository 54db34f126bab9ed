"""The records every benchmark loader produces, and the JSONL reading they share (ground floor of yfpo.data)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass
class Problem:
    id: str
    question: str
    answer: str  # gold final answer, as a string ("72", "-3.5", "\\frac{1}{2}")
    solution: str | None = None  # gold worked solution, if the benchmark has one
    source: str = ""  # benchmark name (gsm8k, math500, svamp, asdiv_a, mawps_singleop, ...)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DataNotFoundError(FileNotFoundError):
    pass


class DataFormatError(ValueError):
    """A data file line that does not match its expected format (names file, line, field)."""


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-empty line; bad JSON -> DataFormatError naming file:line."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def need(loc: str, obj: dict, key: str, types: tuple = (str,)) -> Any:
    """obj[key], of one of `types`; else DataFormatError naming the location (file:line) and the field."""
    if key not in obj:
        raise DataFormatError(f"{loc}: missing field {key!r}")
    v = obj[key]
    if not isinstance(v, types):
        names = "/".join(t.__name__ for t in types)
        raise DataFormatError(f"{loc}: field {key!r} must be {names}, got {type(v).__name__}")
    return v


def num_str(x: float | int | str) -> str:
    """72.0 -> '72', 0.50 -> '0.5'."""
    if isinstance(x, str):
        return x.strip()
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))

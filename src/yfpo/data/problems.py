"""Benchmark loaders: every math benchmark becomes a list of `Problem` records.

A benchmark is looked for in: `--data-dir` (the `data_dir` argument), then `$YFPO_DATA_DIR`, then
`../shared/data` beside the checkout (and beside the current directory). The Hugging Face Hub is used
only when asked for (`hub=True`, `yfpo eval --hub`, or YFPO_HUB=1), never as a silent fallback. When
no place has it the error lists every place it looked. `benchmark_provenance` gives the file(s) read and
their sha256, recorded in every eval summary. A user file in one of the supported formats can be passed as `path=`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator


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


def _need(path: Path, n: int, obj: dict, key: str, types: tuple = (str,)) -> Any:
    if key not in obj:
        raise DataFormatError(f"{path}:{n}: missing field {key!r}")
    v = obj[key]
    if not isinstance(v, types):
        names = "/".join(t.__name__ for t in types)
        raise DataFormatError(f"{path}:{n}: field {key!r} must be {names}, got {type(v).__name__}")
    return v


def _num_str(x: float | int | str) -> str:
    """72.0 -> '72', 0.50 -> '0.5'."""
    if isinstance(x, str):
        return x.strip()
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


_CALC = re.compile(r"<<[^<>]*>>")


def gsm8k_split_answer(text: str) -> tuple[str, str]:
    """GSM8K 'answer' field -> (solution without calculator annotations, final answer)."""
    if "####" not in text:
        raise ValueError("GSM8K answer has no '####' line")
    sol, ans = text.rsplit("####", 1)
    return _CALC.sub("", sol).strip(), ans.strip().replace(",", "")


# ---------------------------------------------------------------------- per-format parsers


def _parse_gsm8k(path: Path, name: str) -> list[Problem]:
    out = []
    for n, o in read_jsonl(path):
        q = _need(path, n, o, "question")
        a = _need(path, n, o, "answer")
        try:
            sol, ans = gsm8k_split_answer(a)
        except ValueError as e:
            raise DataFormatError(f"{path}:{n}: field 'answer': {e}") from None
        out.append(Problem(f"{name}-{len(out)}", q, ans, sol, name))
    return out


def _parse_math(path: Path, name: str) -> list[Problem]:
    from yfpo.grading import last_boxed  # tiny pure helper

    out = []
    for n, o in read_jsonl(path):
        q = _need(path, n, o, "problem")
        sol = _need(path, n, o, "solution")
        ans = o.get("answer") or last_boxed(sol)
        if ans is None:
            raise DataFormatError(f"{path}:{n}: no 'answer' field and no \\boxed{{}} in 'solution'")
        meta = {k: o[k] for k in ("subject", "type", "level", "unique_id") if k in o}
        out.append(Problem(str(o.get("unique_id", f"{name}-{len(out)}")), q, str(ans), sol, name, meta))
    return out


def _parse_svamp(path: Path, name: str) -> list[Problem]:
    out = []
    for n, o in read_jsonl(path):
        body = _need(path, n, o, "Body")
        q = _need(path, n, o, "Question")
        a = _need(path, n, o, "Answer", (int, float))
        text = body.strip()
        text = text + ("" if text.endswith(".") else ".") + " " + q.strip()
        out.append(
            Problem(
                str(o.get("ID", f"{name}-{len(out)}")),
                text,
                _num_str(a),
                None,
                name,
                {"equation": o.get("Equation"), "type": o.get("Type")},
            )
        )
    return out


def _parse_asdiv(path: Path, name: str, subset_a: bool) -> list[Problem]:
    out = []
    for n, o in read_jsonl(path):
        if subset_a and o.get("asdiv_a_fold") is None:
            continue
        body = _need(path, n, o, "body")
        q = _need(path, n, o, "question")
        raw = _need(path, n, o, "answer")
        ans = re.sub(r"\s*\(.*\)\s*$", "", raw).strip().replace(",", "")
        out.append(
            Problem(
                str(o.get("id", f"{name}-{len(out)}")),
                f"{body.strip()} {q.strip()}",
                ans,
                None,
                name,
                {"raw_answer": raw, "formula": o.get("formula"), "solution_type": o.get("solution_type")},
            )
        )
    return out


def _parse_mawps(path: Path, name: str) -> list[Problem]:
    out = []
    for n, o in read_jsonl(path):
        q = _need(path, n, o, "input")
        a = _need(path, n, o, "target", (int, float))
        # PAL's copies are space-tokenized ("beach . How"); undo the worst of it
        q = re.sub(r"\s+([.,?!])", r"\1", q.strip())
        out.append(Problem(f"{name}-{len(out)}", q, _num_str(a), None, name))
    return out


def _parse_generic(path: Path, name: str) -> list[Problem]:
    """Any JSONL with question/answer (or problem/answer, input/target) fields."""
    out = []
    for n, o in read_jsonl(path):
        q = o.get("question", o.get("problem", o.get("input")))
        a = o.get("answer", o.get("target"))
        if not isinstance(q, str):
            raise DataFormatError(f"{path}:{n}: expected a string field 'question' (or 'problem' / 'input')")
        if a is None:
            raise DataFormatError(f"{path}:{n}: expected a field 'answer' (or 'target')")
        sol = None
        if isinstance(a, str) and "####" in a:
            sol, a = gsm8k_split_answer(a)
        out.append(Problem(str(o.get("id", f"{name}-{len(out)}")), q, _num_str(a), o.get("solution", sol), name))
    return out


@dataclass(frozen=True)
class Benchmark:
    name: str
    relpath: str  # path under the data dir
    parse: Callable[[Path, str], list[Problem]]
    hub: tuple[str, str | None, str] | None = None  # (dataset id, config, split) for online users
    kind: str = "number"  # number | math (LaTeX answers)


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("gsm8k", "gsm8k/test.jsonl", _parse_gsm8k, ("openai/gsm8k", "main", "test")),
    "gsm8k_train": Benchmark("gsm8k_train", "gsm8k/train.jsonl", _parse_gsm8k, ("openai/gsm8k", "main", "train")),
    "math500": Benchmark(
        "math500", "math500/test.jsonl", _parse_math, ("HuggingFaceH4/MATH-500", None, "test"), "math"
    ),
    "math": Benchmark("math", "math/test.jsonl", _parse_math, None, "math"),
    "svamp": Benchmark("svamp", "svamp/test.jsonl", _parse_svamp),
    "asdiv_a": Benchmark("asdiv_a", "asdiv/asdiv.jsonl", lambda p, n: _parse_asdiv(p, n, True)),
    "asdiv": Benchmark("asdiv", "asdiv/asdiv.jsonl", lambda p, n: _parse_asdiv(p, n, False)),
    "mawps_addsub": Benchmark("mawps_addsub", "mawps/addsub.jsonl", _parse_mawps),
    "mawps_multiarith": Benchmark("mawps_multiarith", "mawps/multiarith.jsonl", _parse_mawps),
    "mawps_singleeq": Benchmark("mawps_singleeq", "mawps/singleeq.jsonl", _parse_mawps),
    "mawps_singleop": Benchmark("mawps_singleop", "mawps/singleop.jsonl", _parse_mawps),
}


# filled by yfpo.data.splits when it loads (yfpo/data/__init__.py imports it, so every `yfpo.data.*` import has it):
# load_part (the split's loader) and sources (the benchmarks it is built from); splits sits above this module
SPLIT_HOOKS: dict[str, Any] = {}


def _parse_split_part(part: str):
    """A part of yfpo.data.splits' deduplicated word-problem split; `path` is its anchor file in the data dir."""

    def parse(path: Path, name: str) -> list[Problem]:
        return SPLIT_HOOKS["load_part"](part, data_dir=path.parents[1])

    return parse


# the deduplicated train / validation / test split over MAWPS + ASDiv (yfpo.data.splits)
SPLIT_BENCHMARKS = {f"wordprob_{part}": part for part in ("train", "val", "test")}
for _name, _part in SPLIT_BENCHMARKS.items():
    BENCHMARKS[_name] = Benchmark(_name, "asdiv/asdiv.jsonl", _parse_split_part(_part))

# "mawps" = the four subsets together
GROUPS = {"mawps": ["mawps_addsub", "mawps_multiarith", "mawps_singleeq", "mawps_singleop"]}


def candidate_data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir:
        dirs.append(Path(data_dir))
    if os.environ.get("YFPO_DATA_DIR"):
        dirs.append(Path(os.environ["YFPO_DATA_DIR"]))
    here = Path(__file__).resolve()
    # <checkout>/src/yfpo/data/problems.py -> <checkout>/../shared/data
    for base in (here.parents[3], Path.cwd()):
        dirs.append(base.parent / "shared" / "data")
        dirs.append(base / "shared" / "data")
    seen, uniq = set(), []
    for d in dirs:
        key = str(d.resolve()) if d.exists() else str(d)
        if key not in seen:
            seen.add(key)
            uniq.append(d)
    return uniq


def find_data_file(relpath: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    for d in candidate_data_dirs(data_dir):
        p = d / relpath
        if p.exists():
            return p
    return None


def _from_hub(b: Benchmark, name: str) -> list[Problem]:
    import datasets  # noqa: F401  (optional, only for online users)

    ds_id, cfg, split = b.hub  # type: ignore[misc]
    ds = datasets.load_dataset(ds_id, cfg, split=split)
    from yfpo.utils import atomic_write_text

    tmp = _hub_cache(name)
    atomic_write_text(tmp, "".join(json.dumps(row) + "\n" for row in ds))
    return b.parse(tmp, name)


def hub_allowed(hub: bool | None = None) -> bool:
    """The Hub only when asked: hub=True, or (hub None) the environment variable YFPO_HUB=1."""
    return bool(hub) if hub is not None else os.environ.get("YFPO_HUB") == "1"


def _hub_cache(name: str) -> Path:
    return Path(os.environ.get("YFPO_CACHE", Path.home() / ".cache" / "yfpo")) / "hub_data" / f"{name}.jsonl"


def benchmark_provenance(
    name: str, data_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None
) -> list[dict]:
    """[{path, sha256}] of the file(s) load_benchmark reads for `name` (several for a group)."""
    from yfpo.utils import sha256_file

    if path is not None:
        files = [Path(path)]
    elif name in SPLIT_BENCHMARKS:  # built from every source and evaluation set
        return [r for sub in SPLIT_HOOKS["sources"] for r in benchmark_provenance(sub, data_dir)]
    elif name in GROUPS:
        return [r for sub in GROUPS[name] for r in benchmark_provenance(sub, data_dir)]
    else:
        b = BENCHMARKS.get(name)
        f = find_data_file(b.relpath, data_dir) if b is not None else None
        files = [f if f is not None else _hub_cache(name)]
    return [{"path": str(f.resolve()), "sha256": sha256_file(f)} for f in files if f.exists()]


def load_benchmark(
    name: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    path: str | os.PathLike | None = None,
    hub: bool | None = None,
) -> list[Problem]:
    """Problems of a named benchmark (or of a user `path` in that benchmark's format), first `limit`.
    A benchmark missing locally is fetched from the Hub only when hub_allowed(hub)."""
    if name in GROUPS:
        probs = [p for sub in GROUPS[name] for p in load_benchmark(sub, data_dir, None, hub=hub)]
        return probs[:limit] if limit else probs
    if path is not None:
        parse = BENCHMARKS[name].parse if name in BENCHMARKS else _parse_generic
        probs = parse(Path(path), name)
        return probs[:limit] if limit else probs
    if name not in BENCHMARKS:
        raise ValueError(
            f"unknown benchmark {name!r}; known: {', '.join(list(BENCHMARKS) + list(GROUPS))} "
            "(or pass a file with path=/--bench-file)"
        )
    b = BENCHMARKS[name]
    p = find_data_file(b.relpath, data_dir)
    if p is not None:
        probs = b.parse(p, name)
    else:
        looked = [str(d / b.relpath) for d in candidate_data_dirs(data_dir)]
        hub_err = "no Hugging Face dataset known for it"
        if b.hub is not None and not hub_allowed(hub):
            hub_err = f"the Hugging Face Hub ({b.hub[0]}) was not asked for (pass --hub or set YFPO_HUB=1 to use it)"
        elif b.hub is not None:
            try:
                probs = _from_hub(b, name)
                return probs[:limit] if limit else probs
            except Exception as e:  # offline, datasets missing, ...
                hub_err = f"Hugging Face Hub {b.hub[0]}: {type(e).__name__}: {str(e)[:200]}"
        raise DataNotFoundError(
            f"benchmark {name!r} not found. Looked in: " + "; ".join(looked) + f"; and {hub_err}. "
            "Pass --data-dir or set YFPO_DATA_DIR."
        )
    return probs[:limit] if limit else probs


def benchmark_kind(name: str) -> str:
    return BENCHMARKS[name].kind if name in BENCHMARKS else "number"

"""Benchmark loaders: every math benchmark becomes a list of `Problem` records.

Each built-in benchmark is a TaskSpec (yfpo.data.taskspec), the kind a user's benchmark file gets: its file under
the data folder, its answer kind, the Hugging Face dataset it comes from, and a `prepare` that turns one row of its
format into an item; load_task reads them all. A benchmark is looked for in: `--data-dir` (the `data_dir`
argument), then `$YFPO_DATA_DIR`, then `../shared/data` beside the checkout (and beside the current directory).
The Hugging Face Hub is used only when asked for (`hub=True`, `yfpo eval --hub`, or YFPO_HUB=1), never as a silent
fallback. When no place has it the error lists every place it looked. `benchmark_provenance` gives the file(s) read
and their sha256, recorded in every eval summary. A user file in one of the formats can be passed as `path=`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from yfpo.data.records import DataFormatError, DataNotFoundError, Problem, need, num_str, read_jsonl
from yfpo.data.taskspec import TaskSpec, load_task

__all__ = ["BENCHMARKS", "DataFormatError", "DataNotFoundError", "GROUPS", "Problem", "load_benchmark", "read_jsonl"]

_CALC = re.compile(r"<<[^<>]*>>")


def gsm8k_split_answer(text: str) -> tuple[str, str]:
    """GSM8K 'answer' field -> (solution without calculator annotations, final answer)."""
    if "####" not in text:
        raise ValueError("GSM8K answer has no '####' line")
    sol, ans = text.rsplit("####", 1)
    return _CALC.sub("", sol).strip(), ans.strip().replace(",", "")


# ---------------------------------------------------------------------- one row of each format -> an item


def _gsm8k(loc: str, o: dict) -> dict:
    q, a = need(loc, o, "question"), need(loc, o, "answer")
    try:
        sol, ans = gsm8k_split_answer(a)
    except ValueError as e:
        raise DataFormatError(f"{loc}: field 'answer': {e}") from None
    return {"question": q, "answer": ans, "solution": sol}


def _math(loc: str, o: dict) -> dict:
    from yfpo.grading import last_boxed  # tiny pure helper

    q, sol = need(loc, o, "problem"), need(loc, o, "solution")
    ans = o.get("answer") or last_boxed(sol)
    if ans is None:
        raise DataFormatError(f"{loc}: no 'answer' field and no \\boxed{{}} in 'solution'")
    meta = {k: o[k] for k in ("subject", "type", "level", "unique_id") if k in o}
    return {"question": q, "answer": str(ans), "solution": sol, "id": o.get("unique_id"), "meta": meta}


def _svamp(loc: str, o: dict) -> dict:
    body, q = need(loc, o, "Body"), need(loc, o, "Question")
    a = need(loc, o, "Answer", (int, float))
    text = body.strip()
    text = text + ("" if text.endswith(".") else ".") + " " + q.strip()
    meta = {"equation": o.get("Equation"), "type": o.get("Type")}
    return {"question": text, "answer": num_str(a), "id": o.get("ID"), "meta": meta}


def _asdiv(subset_a: bool):
    def prepare(loc: str, o: dict) -> dict | None:
        if subset_a and o.get("asdiv_a_fold") is None:
            return None
        body, q, raw = need(loc, o, "body"), need(loc, o, "question"), need(loc, o, "answer")
        ans = re.sub(r"\s*\(.*\)\s*$", "", raw).strip().replace(",", "")
        meta = {"raw_answer": raw, "formula": o.get("formula"), "solution_type": o.get("solution_type")}
        return {"question": f"{body.strip()} {q.strip()}", "answer": ans, "id": o.get("id"), "meta": meta}

    return prepare


def _mawps(loc: str, o: dict) -> dict:
    q, a = need(loc, o, "input"), need(loc, o, "target", (int, float))
    # PAL's copies are space-tokenized ("beach . How"); undo the worst of it
    return {"question": re.sub(r"\s+([.,?!])", r"\1", q.strip()), "answer": num_str(a)}


def _generic(loc: str, o: dict) -> dict:
    """Any JSONL with question/answer (or problem/answer, input/target) fields."""
    q = o.get("question", o.get("problem", o.get("input")))
    a = o.get("answer", o.get("target"))
    if not isinstance(q, str):
        raise DataFormatError(f"{loc}: expected a string field 'question' (or 'problem' / 'input')")
    if a is None:
        raise DataFormatError(f"{loc}: expected a field 'answer' (or 'target')")
    sol = None
    if isinstance(a, str) and "####" in a:
        sol, a = gsm8k_split_answer(a)
    return {"question": q, "answer": num_str(a), "solution": o.get("solution", sol), "id": o.get("id")}


def _builtin(name: str, file: str, prepare, hub=None, answer_kind: str = "number", **kw) -> TaskSpec:
    """A built-in benchmark's TaskSpec; `file` is relative to the data folder (resolved when it loads)."""
    return TaskSpec(file=file, name=name, answer_kind=answer_kind, prepare=prepare, hub=hub, **kw)


BENCHMARKS: dict[str, TaskSpec] = {
    "gsm8k": _builtin("gsm8k", "gsm8k/test.jsonl", _gsm8k, ("openai/gsm8k", "main", "test")),
    "gsm8k_train": _builtin("gsm8k_train", "gsm8k/train.jsonl", _gsm8k, ("openai/gsm8k", "main", "train")),
    "math500": _builtin("math500", "math500/test.jsonl", _math, ("HuggingFaceH4/MATH-500", None, "test"), "math"),
    "math": _builtin("math", "math/test.jsonl", _math, None, "math"),
    "svamp": _builtin("svamp", "svamp/test.jsonl", _svamp),
    "asdiv_a": _builtin("asdiv_a", "asdiv/asdiv.jsonl", _asdiv(True)),
    "asdiv": _builtin("asdiv", "asdiv/asdiv.jsonl", _asdiv(False)),
    "mawps_addsub": _builtin("mawps_addsub", "mawps/addsub.jsonl", _mawps),
    "mawps_multiarith": _builtin("mawps_multiarith", "mawps/multiarith.jsonl", _mawps),
    "mawps_singleeq": _builtin("mawps_singleeq", "mawps/singleeq.jsonl", _mawps),
    "mawps_singleop": _builtin("mawps_singleop", "mawps/singleop.jsonl", _mawps),
}


# filled by yfpo.data.splits when it loads (yfpo/data/__init__.py imports it, so every `yfpo.data.*` import has it):
# load_part (the split's loader) and sources (the benchmarks it is built from); splits sits above this module
SPLIT_HOOKS: dict[str, Any] = {}


def _split_part(part: str):
    """A part of yfpo.data.splits' deduplicated word-problem split; `path` is its anchor file in the data dir."""

    def load(path: Path, name: str) -> list[Problem]:
        return SPLIT_HOOKS["load_part"](part, data_dir=path.parents[1])

    return load


# the deduplicated train / validation / test split over MAWPS + ASDiv (yfpo.data.splits)
SPLIT_BENCHMARKS = {f"wordprob_{part}": part for part in ("train", "val", "test")}
for _name, _part in SPLIT_BENCHMARKS.items():
    BENCHMARKS[_name] = TaskSpec(file="asdiv/asdiv.jsonl", name=_name, loader=_split_part(_part))

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


def check_benchmark_files(benches: list[str], data_dir: str | os.PathLike | None, where: str) -> None:
    """Every benchmark named is known and its data file is on disk (the Hub is not a silent fallback); the error
    names `where` (the config field) and the folders looked in."""
    for bench in benches:
        if bench not in BENCHMARKS and bench not in GROUPS:
            known = ", ".join(list(BENCHMARKS) + list(GROUPS))
            raise ValueError(f"{where}: unknown benchmark {bench!r}; known: {known}")
        for sub in GROUPS.get(bench, [bench]):
            rel = BENCHMARKS[sub].file
            if find_data_file(rel, data_dir) is None:
                looked = ", ".join(str(d / rel) for d in candidate_data_dirs(data_dir))
                raise FileNotFoundError(
                    f"{where}: benchmark {sub!r} has no data file (looked in {looked}); set eval.data_dir or YFPO_DATA_DIR"
                )


def _from_hub(b: TaskSpec, name: str) -> list[Problem]:
    import datasets  # noqa: F401  (optional, only for online users)

    ds_id, cfg, split = b.hub  # type: ignore[misc]
    ds = datasets.load_dataset(ds_id, cfg, split=split)
    from yfpo.utils import atomic_write_text

    tmp = _hub_cache(name)
    atomic_write_text(tmp, "".join(json.dumps(row) + "\n" for row in ds))
    return load_task(dataclasses.replace(b, file=str(tmp)))


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
        f = find_data_file(b.file, data_dir) if b is not None else None
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
    if path is not None:  # a user file in the named benchmark's format (else question/answer fields)
        spec = BENCHMARKS.get(name) or TaskSpec(file=str(path), name=name, prepare=_generic)
        return load_task(dataclasses.replace(spec, file=str(path)), limit)
    if name not in BENCHMARKS:
        raise ValueError(
            f"unknown benchmark {name!r}; known: {', '.join(list(BENCHMARKS) + list(GROUPS))} "
            "(or pass a file with path=/--bench-file)"
        )
    b = BENCHMARKS[name]
    p = find_data_file(b.file, data_dir)
    if p is not None:
        probs = load_task(dataclasses.replace(b, file=str(p)), limit)
    else:
        looked = [str(d / b.file) for d in candidate_data_dirs(data_dir)]
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
    return BENCHMARKS[name].grade_kind if name in BENCHMARKS else "number"

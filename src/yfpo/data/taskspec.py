"""Task specs: any benchmark file as a list of `Problem` records, from a small YAML file or CLI flags.

A spec (YAML mapping; CLI: --task-file / --question-field / ...):

    name: gsm_plus_mini            # results go to OUT/<name>/ (default: the file's stem)
    file: data/gsm_plus.jsonl      # .jsonl, .json (a list of objects), .csv, .parquet; relative to the spec
    question_field: question       # or question_template: "{body} {question}" (Python format fields)
    answer_field: answer
    answer_kind: none-allowed      # number | math | none-allowed (number, or a "no answer" gold)
    solution_field: solution       # optional
    group_field: perturbation_type # optional: per-group accuracy
    id_field: id                   # optional (default: <name>-<row index>)
    no_answer_values: ["None"]     # gold values meaning "the question cannot be answered" (none-allowed)

Items whose gold is a no-answer value carry meta["no_answer"] = True; the eval grades them as correct
when the output says the question cannot be answered (and gives no final answer), and reports them
apart from the answerable items. Errors name the spec file and line, or the data file, row and field.

The built-in benchmarks (gsm8k, math500, svamp, asdiv, mawps, ...) are TaskSpecs too (yfpo.data.problems.BENCHMARKS),
loaded by the same load_task: their `file` is relative to the data folder, and a Python-only `prepare` turns one row
of their format into the item (question, answer, solution, id, meta), or skips it, naming the row in its errors.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from yfpo.data.records import DataFormatError, Problem, num_str, read_jsonl

ANSWER_KINDS = ("number", "math", "none-allowed")
FORMATS = (".jsonl", ".json", ".csv", ".parquet")


class SpecError(ValueError):
    """A task spec that does not parse (names the spec file and line, or the flag)."""


@dataclass
class TaskSpec:
    file: str
    answer_field: str = "answer"
    question_field: str | None = None
    question_template: str | None = None
    answer_kind: str = "number"
    solution_field: str | None = None
    group_field: str | None = None
    id_field: str | None = None
    name: str | None = None
    no_answer_values: list[str] = field(default_factory=lambda: ["None", "none", "N/A", "", "null"])
    # Python-only (the built-in benchmarks): not YAML keys, not in to_dict. prepare(location, row) -> {question,
    # answer, solution?, id?, meta?} or None to skip the row; loader(file, name) -> the items of a derived set
    # (a split built from other benchmarks); hub: (dataset id, config, split) to fetch it when asked for.
    prepare: Callable[[str, dict], dict | None] | None = field(default=None, repr=False, compare=False)
    loader: Callable[[Path, str], list[Problem]] | None = field(default=None, repr=False, compare=False)
    hub: tuple[str, str | None, str] | None = None

    def __post_init__(self):
        if not self.question_field and not self.question_template:
            self.question_field = "question"
        if self.name is None:
            self.name = Path(self.file).stem

    @property
    def grade_kind(self) -> str:
        return "math" if self.answer_kind == "math" else "number"

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in PYTHON_ONLY}


PYTHON_ONLY = ("prepare", "loader", "hub")  # TaskSpec fields a YAML spec cannot set


def _check(spec: TaskSpec, where) -> TaskSpec:
    """Validate field values; `where(key)` names the spec location of a key."""
    if spec.answer_kind not in ANSWER_KINDS:
        raise SpecError(
            f"{where('answer_kind')}: answer_kind {spec.answer_kind!r}: expected one of {', '.join(ANSWER_KINDS)}"
        )
    if Path(spec.file).suffix.lower() not in FORMATS:
        raise SpecError(f"{where('file')}: file {spec.file!r}: expected a {' / '.join(FORMATS)} file")
    if spec.question_field and spec.question_template:
        raise SpecError(f"{where('question_template')}: give question_field or question_template, not both")
    if spec.question_template:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(spec.question_template) if f]
        except ValueError as e:
            raise SpecError(f"{where('question_template')}: question_template does not parse ({e})") from None
        if not names:
            raise SpecError(f"{where('question_template')}: question_template names no field ({{field}})")
    return spec


def load_spec(path: str | Path) -> TaskSpec:
    """Parse a YAML task spec; errors name path:line and the key."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{path}: cannot read task spec ({e.strerror})") from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SpecError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        raise SpecError(
            f"{path}{line}: a task spec must be a mapping of keys (file, question_field, answer_field, ...)"
        )
    known = {f.name for f in fields(TaskSpec)} - set(PYTHON_ONLY)
    lines: dict[str, int] = {}
    for k, v in node.value:
        lines[k.value] = k.start_mark.line + 1
        if k.value not in known:
            raise SpecError(
                f"{path}:{k.start_mark.line + 1}: unknown key {k.value!r}; known: {', '.join(sorted(known))}"
            )
    data = yaml.safe_load(text)
    for k, v in data.items():
        want_list = k == "no_answer_values"
        if want_list and not (isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v)):
            raise SpecError(f"{path}:{lines[k]}: {k} must be a list of strings")
        if not want_list and v is not None and not isinstance(v, str):
            raise SpecError(f"{path}:{lines[k]}: {k} must be a string, got {type(v).__name__}")
    if "file" not in data:
        raise SpecError(f"{path}:1: missing key 'file' (the benchmark file)")
    if want_vals := data.get("no_answer_values"):
        data["no_answer_values"] = [str(x) for x in want_vals]
    f = Path(data["file"])
    if not f.is_absolute():
        data["file"] = str((path.parent / f))
    spec = TaskSpec(**data)
    return _check(spec, lambda k: f"{path}:{lines.get(k, 1)}")


def spec_from_flags(file: str, **kw) -> TaskSpec:
    kw = {k: v for k, v in kw.items() if v is not None}
    spec = TaskSpec(file=file, **kw)
    return _check(spec, lambda k: f"--{k.replace('_', '-')}")


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """(location, row) pairs of a data file; location is 'file:line' (JSONL) or 'file row N'."""
    suf = path.suffix.lower()
    if not path.exists():
        raise DataFormatError(f"{path}: benchmark file does not exist")
    if suf == ".jsonl":
        return [(f"{path}:{n}", o) for n, o in read_jsonl(path)]
    if suf == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict):  # {"data": [...]} or {"test": [...]}: the one list inside
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataFormatError(f"{path}: expected a JSON list of objects (or an object holding one list)")
            data = lists[0]
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: expected a JSON list of objects")
        out = []
        for i, o in enumerate(data):
            if not isinstance(o, dict):
                raise DataFormatError(f"{path} item {i}: expected an object, got {type(o).__name__}")
            out.append((f"{path} item {i}", o))
        return out
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False) if suf == ".csv" else pd.read_parquet(path)
    first = 2 if suf == ".csv" else 0  # CSV: line 1 is the header
    rows = df.to_dict(orient="records")
    label = (lambda i: f"{path}:{i + first}") if suf == ".csv" else (lambda i: f"{path} row {i}")
    return [(label(i), r) for i, r in enumerate(rows)]


def _field(loc: str, row: dict, key: str) -> object:
    if key not in row:
        raise DataFormatError(f"{loc}: missing field {key!r} (has: {', '.join(map(str, row))})")
    return row[key]


def load_task(spec: TaskSpec, limit: int | None = None) -> list[Problem]:
    """The spec's file as Problems (meta: group, no_answer, row location; a built-in format's meta from its
    prepare). Ids: id_field, else <name>-<n> (n: the items before it)."""
    path = Path(spec.file)
    name = spec.name or path.stem
    if spec.loader is not None:
        probs = spec.loader(path, name)
        return probs[:limit] if limit else probs
    out: list[Problem] = []
    no_ans = {str(v).strip() for v in spec.no_answer_values}
    for i, (loc, row) in enumerate(read_rows(path)):
        if limit and len(out) >= limit:
            break
        if spec.prepare is not None:
            item = spec.prepare(loc, row)
            if item is not None:
                pid = item.get("id")
                pid = f"{name}-{len(out)}" if pid is None else str(pid)
                out.append(
                    Problem(pid, item["question"], item["answer"], item.get("solution"), name, item.get("meta", {}))
                )
            continue
        if spec.question_template:
            try:
                q = spec.question_template.format(**row)
            except KeyError as e:
                raise DataFormatError(f"{loc}: question_template needs field {e.args[0]!r}, not in the row") from None
        else:
            q = _field(loc, row, spec.question_field)  # type: ignore[arg-type]
        if not isinstance(q, str) or not q.strip():
            raise DataFormatError(
                f"{loc}: field {spec.question_field or 'question_template'!r}: expected a non-empty string"
            )
        a = _field(loc, row, spec.answer_field)
        a_str = "None" if a is None else (num_str(a) if isinstance(a, (int, float, str)) else str(a))
        is_none = a is None or a_str in no_ans
        if is_none and spec.answer_kind != "none-allowed":
            raise DataFormatError(
                f"{loc}: field {spec.answer_field!r} is {a_str!r} (no answer); "
                "use answer_kind: none-allowed to grade such items"
            )
        meta: dict = {"row": loc, "no_answer": is_none}
        if spec.group_field:
            meta["group"] = str(_field(loc, row, spec.group_field))
        sol = str(_field(loc, row, spec.solution_field)) if spec.solution_field else None
        pid = str(_field(loc, row, spec.id_field)) if spec.id_field else f"{name}-{i}"
        out.append(Problem(pid, q.strip(), "None" if is_none else a_str, sol, name, meta))
    ids = [p.id for p in out]
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise DataFormatError(f"{path}: id {dup!r} (field {spec.id_field!r}) appears more than once")
    return out

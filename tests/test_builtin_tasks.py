"""The built-in benchmarks are TaskSpecs read by the same load_task as a user's benchmark file, and they load
exactly the items the per-format parsers they replaced loaded."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from yfpo.data.problems import BENCHMARKS, GROUPS, load_benchmark
from yfpo.data.taskspec import SpecError, TaskSpec, load_spec


@pytest.mark.parametrize(
    "name, n, digest",
    [
        ("gsm8k", 1319, "37d500a132bcf8f8"),
        ("gsm8k_train", 7473, "9856e57a105b5016"),
        ("math500", 500, "2f09e525532f9a11"),
        ("math", 5000, "3a32c2f676d251e4"),
        ("svamp", 1000, "34669401bc6fe072"),
        ("asdiv_a", 1218, "e08eebf89e84dcc0"),
        ("asdiv", 2305, "4e81426f20c9d3e3"),
        ("mawps_addsub", 395, "f525b677e60f3ef2"),
        ("mawps_multiarith", 600, "54c1727a56805fdf"),
        ("mawps_singleeq", 508, "cf6d2f3917d18bac"),
        ("mawps_singleop", 562, "4f462ac951da059f"),
        ("wordprob_train", 2039, "c0877e433711a033"),
        ("wordprob_val", 400, "5936a198290845b6"),
        ("wordprob_test", 1000, "c5dd8c0ad403290e"),
        ("mawps", 2065, "96901ca6a20a9453"),
    ],
)
def test_builtin_benchmarks_load_what_the_old_parsers_loaded(name, n, digest):
    """sha256 over every item (id, question, answer, solution, source, meta), as loaded at commit 42a2cbd by the
    per-format parsers (_parse_gsm8k, _parse_math, ...) from the shared data: the move to TaskSpecs changed none."""
    probs = load_benchmark(name)
    blob = json.dumps([dataclasses.asdict(p) for p in probs], sort_keys=True, default=str)
    assert (len(probs), hashlib.sha256(blob.encode()).hexdigest()[:16]) == (n, digest)


def test_builtins_are_task_specs_of_the_user_kind(tmp_path):
    assert all(isinstance(s, TaskSpec) for s in BENCHMARKS.values()) and set(GROUPS["mawps"]) <= set(BENCHMARKS)
    gsm = BENCHMARKS["gsm8k"]
    assert (gsm.file, gsm.name, gsm.answer_kind, gsm.hub) == (
        "gsm8k/test.jsonl",
        "gsm8k",
        "number",
        ("openai/gsm8k", "main", "test"),
    )
    assert BENCHMARKS["math500"].grade_kind == "math"
    # the Python-only fields are neither in to_dict (what a result records) nor settable from YAML
    assert not {"prepare", "loader", "hub"} & set(gsm.to_dict())
    # a user spec records the keys it always did (its eval folders' claims and protocol stay valid on resume)
    assert set(TaskSpec(file="x.jsonl").to_dict()) == {
        "file",
        "answer_field",
        "question_field",
        "question_template",
        "answer_kind",
        "solution_field",
        "group_field",
        "id_field",
        "name",
        "no_answer_values",
    }
    spec = tmp_path / "t.yaml"
    spec.write_text("file: x.jsonl\nprepare: os.system\n")
    with pytest.raises(SpecError, match="unknown key 'prepare'"):
        load_spec(spec)


def test_builtin_format_file_and_limit(tmp_path):
    """A user file in a built-in's format goes through its spec (errors name file:line); limit stops reading."""
    from yfpo.data.problems import DataFormatError

    f = tmp_path / "mine.jsonl"
    rows = [{"question": f"q{i}", "answer": f"so 2 + {i}\n#### {2 + i}"} for i in range(3)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"question": "q", "answer": "no marker"}\n')
    probs = load_benchmark("gsm8k", path=str(f), limit=2)
    assert [(p.id, p.answer, p.solution) for p in probs] == [("gsm8k-0", "2", "so 2 + 0"), ("gsm8k-1", "3", "so 2 + 1")]
    with pytest.raises(DataFormatError, match=r"mine.jsonl:4: field 'answer': GSM8K answer has no '####' line"):
        load_benchmark("gsm8k", path=str(f))
    # a file in no built-in's format: question/answer fields (or problem/answer, input/target)
    g = tmp_path / "plain.jsonl"
    g.write_text(json.dumps({"input": "How many?", "target": 4.0, "id": 7}) + "\n")
    (p,) = load_benchmark("mine", path=str(g))
    assert (p.id, p.question, p.answer, p.source) == ("7", "How many?", "4", "mine")

"""Task specs: YAML parsing errors with file:line, every file format, groups, "no answer" golds, protocols."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import yfpo.eval.bench as bench_mod
from yfpo.data.problems import DataFormatError
from yfpo.data.taskspec import SpecError, TaskSpec, load_spec, load_task, spec_from_flags
from yfpo.engine.common import Generation
from yfpo.engine.prompts import PROTOCOLS, build_prompt
from yfpo.eval.bench import run_eval
from yfpo.grading import grade_item

ROWS = [
    {"qid": "a", "question": "Tom has 3 apples and buys 2. How many?", "answer": "5", "perturbation_type": "numerical"},
    {
        "qid": "b",
        "question": "Tom has some apples and buys 2. How many?",
        "answer": "None",
        "perturbation_type": "critical thinking",
    },
    {"qid": "c", "question": "Ann has 4 pens and loses 1. How many?", "answer": 3, "perturbation_type": "numerical"},
]


def _write(tmp_path, ext):
    f = tmp_path / f"bench{ext}"
    if ext == ".jsonl":
        f.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif ext == ".json":
        f.write_text(json.dumps(ROWS))
    elif ext == ".csv":
        pd.DataFrame(ROWS).astype(str).to_csv(f, index=False)
    else:
        pd.DataFrame(ROWS).astype(str).to_parquet(f)
    return f


def _spec_yaml(tmp_path, body: str):
    p = tmp_path / "spec.yaml"
    p.write_text(body)
    return p


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_format(tmp_path, ext):
    f = _write(tmp_path, ext)
    spec = spec_from_flags(str(f), answer_kind="none-allowed", group_field="perturbation_type", id_field="qid")
    probs = load_task(spec)
    assert [p.id for p in probs] == ["a", "b", "c"]
    assert [p.answer for p in probs] == ["5", "None", "3"]
    assert [p.meta["no_answer"] for p in probs] == [False, True, False]
    assert probs[1].meta["group"] == "critical thinking"


def test_yaml_spec_and_relative_file(tmp_path):
    _write(tmp_path, ".jsonl")
    p = _spec_yaml(
        tmp_path,
        "name: mini\nfile: bench.jsonl\nanswer_kind: none-allowed\ngroup_field: perturbation_type\n"
        "question_template: 'Q: {question}'\n",
    )
    spec = load_spec(p)
    assert spec.name == "mini" and spec.file == str(tmp_path / "bench.jsonl")
    probs = load_task(spec, limit=2)
    assert len(probs) == 2 and probs[0].question.startswith("Q: Tom") and probs[0].id == "mini-0"


def test_spec_errors_name_file_line(tmp_path):
    cases = {
        "file: x.jsonl\nanswer_kind: numbr\n": r"spec.yaml:2: answer_kind 'numbr'",
        "file: x.jsonl\n\nquestoin_field: q\n": r"spec.yaml:3: unknown key 'questoin_field'",
        "file: x.txt\n": r"spec.yaml:1: file '.*x.txt': expected a .jsonl",
        "answer_field: a\n": r"spec.yaml:1: missing key 'file'",
        "file: x.jsonl\nanswer_field: [a, b]\n": r"spec.yaml:2: answer_field must be a string",
        "file: x.jsonl\nquestion_field: q\nquestion_template: '{q}'\n": r"spec.yaml:3: give question_field or question_template",
        "file: x.jsonl\nanswer_field: a\n  bad: : :\n": r"spec.yaml:\d+: not valid YAML",
        "- file: x.jsonl\n": r"spec.yaml:1: a task spec must be a mapping",
    }
    for body, pat in cases.items():
        with pytest.raises(SpecError, match=pat):
            load_spec(_spec_yaml(tmp_path, body))
    with pytest.raises(SpecError, match="--answer-kind"):
        spec_from_flags("x.jsonl", answer_kind="text")


def test_data_errors_name_row_and_field(tmp_path):
    f = _write(tmp_path, ".jsonl")
    with pytest.raises(DataFormatError, match=r"bench.jsonl:1: missing field 'gold'"):
        load_task(TaskSpec(file=str(f), answer_field="gold"))
    # a "None" gold without none-allowed is an error naming the line, not graded as the number "None"
    with pytest.raises(DataFormatError, match=r"bench.jsonl:2: field 'answer' is 'None'.*none-allowed"):
        load_task(TaskSpec(file=str(f)))
    with pytest.raises(DataFormatError, match=r"bench.jsonl:1: question_template needs field 'body'"):
        load_task(TaskSpec(file=str(f), question_template="{body} {question}", answer_kind="none-allowed"))
    c = _write(tmp_path, ".csv")
    with pytest.raises(DataFormatError, match=r"bench.csv:2: missing field 'gold'"):
        load_task(TaskSpec(file=str(c), answer_field="gold"))
    with pytest.raises(DataFormatError, match="appears more than once"):
        load_task(TaskSpec(file=str(f), id_field="perturbation_type", answer_kind="none-allowed"))


def test_no_answer_grading():
    no = "This question cannot be answered: the number of apples is missing."
    assert all(grade_item(no, "None", "number", True, True)["correct"].values())
    assert not any(grade_item("The answer is 5.", "None", "number", True, True)["correct"].values())
    # an answerable item: abstaining is wrong, a right number is right
    assert not any(grade_item(no, "5", "number", True, False)["correct"].values())
    assert grade_item("The answer is 5.", "5", "number", True, False)["correct"]["strict"]


CONFLICTED = "The answer is 2. The question is not answerable."


@pytest.mark.parametrize("gold, gold_is_none", [("None", True), ("2", False), ("7", False)])
def test_answer_and_abstention_at_once_is_conflicted(gold, gold_is_none):
    """An output that commits to a final answer AND abstains is neither a right abstention on a no-answer item nor
    a right answer (or a wrong abstention) on an answerable one: every flag False, marked conflicted."""
    g = grade_item(CONFLICTED, gold, "number", True, gold_is_none)
    assert g["conflicted"] is True and not any(g["correct"].values())
    assert g["extracted"]["strict"] == "2"  # what it answered is kept
    # the same abstention without an answer line, or the answer without the abstention, is not conflicted
    abstain = grade_item("The question is not answerable.", gold, "number", True, gold_is_none)
    answer = grade_item("The answer is 2.", gold, "number", True, gold_is_none)
    assert not abstain["conflicted"] and not answer["conflicted"]
    assert all(abstain["correct"].values()) == gold_is_none
    assert answer["correct"]["strict"] == (gold == "2")
    # a boxed answer commits too; a number merely mentioned does not
    assert grade_item("\\boxed{2}. It cannot be determined.", gold, "number", True, gold_is_none)["conflicted"]
    assert not grade_item("Tom has 3 apples; it cannot be determined.", gold, "number", True, gold_is_none)[
        "conflicted"
    ]


def test_conflicted_items_counted_apart(tmp_path, monkeypatch):
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model()
    f = _write(tmp_path, ".jsonl")  # a: gold 5, b: no answer, c: gold 3
    outs = {"Tom has 3": CONFLICTED, "Tom has some": CONFLICTED, "Ann": "The answer is 3."}

    def fake(model, tok, prompts, **kw):
        return [Generation(next(v for k, v in outs.items() if k in p), 6, False, "eos") for p in prompts]

    monkeypatch.setattr(bench_mod, "generate", fake)
    spec = spec_from_flags(str(f), answer_kind="none-allowed", id_field="qid")
    s = run_eval(model, "ignored", tokenizer=tok, spec=spec, out_dir=tmp_path / "out", progress=False)
    rows = {r["id"]: r for r in bench_mod.load_items(tmp_path / "out")}
    assert [rows[i]["conflicted"] for i in "abc"] == [True, True, False]
    assert s["conflicted"] == 2
    assert s["no_answer"]["strict"]["n_correct"] == 0 and s["answerable"]["strict"]["n_correct"] == 1


def test_run_eval_spec_groups_and_no_answer(tmp_path, monkeypatch):
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model()
    f = _write(tmp_path, ".jsonl")
    outs = {
        "Tom has 3": "The answer is 5.",
        "Tom has some": "This question cannot be answered.",
        "Ann": "The answer is 2.",
    }

    def fake(model, tok, prompts, **kw):
        return [Generation(next(v for k, v in outs.items() if k in p), 6, False, "eos") for p in prompts]

    monkeypatch.setattr(bench_mod, "generate", fake)
    spec = spec_from_flags(str(f), answer_kind="none-allowed", group_field="perturbation_type", id_field="qid")
    s = run_eval(
        model, "ignored", tokenizer=tok, spec=spec, out_dir=tmp_path / "out", progress=False, protocol="self-doubt-v1"
    )
    assert s["bench"] == "bench" and s["n"] == 3
    assert s["no_answer"]["strict"]["n"] == 1 and s["no_answer"]["strict"]["acc"] == 1.0
    assert s["answerable"]["strict"]["n"] == 2 and s["answerable"]["strict"]["n_correct"] == 1
    assert (
        s["by_group"]["numerical"]["strict"]["n_correct"] == 1
        and s["by_group"]["critical thinking"]["strict"]["acc"] == 1.0
    )
    assert s["protocol"]["template"] == "self-doubt-v1" and "answerable" in s["protocol"]["instruction"]
    assert s["protocol"]["task"]["group_field"] == "perturbation_type"
    assert s["answer_length"]["mean_tokens"] == 6


def test_protocols_prompt_text(tmp_path):
    from yfpo.models.tiny import tiny_model

    _, tok = tiny_model()
    q = "What is 2 + 2?"
    for name, proto in PROTOCOLS.items():
        text = build_prompt(tok, q, protocol=name)
        assert q in text and proto.instruction in text
        if proto.system:
            assert text.index(proto.system) < text.index(q)
    shots = tmp_path / "shots.jsonl"
    shots.write_text(json.dumps({"question": "1 + 1?", "answer": "2", "solution": "1 + 1 = 2."}) + "\n")
    text = build_prompt(tok, q, shots=1, protocol="boxed-v1", shots_file=str(shots))
    assert text.index("1 + 1?") < text.index(q) and "The answer is 2." in text
    with pytest.raises(ValueError, match="only 1 problems"):
        build_prompt(tok, q, shots=2, shots_file=str(shots))
    with pytest.raises(ValueError, match="unknown protocol"):
        build_prompt(tok, q, protocol="nope")

"""Every eval writes lm-evaluation-harness-shaped results.json and samples_<task>.jsonl: same keys and value types
as the files lm-eval 0.4.13 itself wrote (tests/fixtures/lm_eval/: its gsm8k task on the default model, 3 items;
how they were made is in docs/lm-eval.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import yfpo.eval.bench as bench_mod
from yfpo.data.problems import load_benchmark
from yfpo.engine.generate import Generation
from yfpo.eval.bench import run_eval
from yfpo.grading import EXTRACTORS
from yfpo.models.tiny import tiny_model

FIX = Path(__file__).parent / "fixtures" / "lm_eval"


def _kind(v) -> str:
    """A JSON value's type; ints and floats are one kind (lm-eval writes 0.0 and 3 alike as numbers)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _same_shape(ours: dict, theirs: dict, where: str, deep: tuple[str, ...] = ()) -> None:
    """Every key of lm-eval's dict is in ours with a value of the same kind (None on lm-eval's side matches any:
    it writes null where it knew nothing, e.g. git_hash); `deep` keys are compared one level further."""
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"{where}: lm-eval has {missing}, ours does not"
    for k, v in theirs.items():
        if v is None or ours[k] is None and k in ("git_hash", "upper_git_hash", "chat_template", "chat_template_sha"):
            continue
        assert _kind(ours[k]) == _kind(v), f"{where}[{k!r}]: ours {ours[k]!r} vs lm-eval {v!r}"
        if k in deep:
            _same_shape(ours[k], v, f"{where}[{k!r}]")


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    model, tok = tiny_model()
    probs = load_benchmark("gsm8k", limit=3)
    texts = {
        probs[0].question: f"She makes 16 - 3 - 4 = 9 eggs.\n#### {probs[0].answer}",  # right, strict and flexible
        probs[1].question: "It takes 2 + 1 = 3 bolts. The answer is 4.",  # wrong
        probs[2].question: "Josh bought a house for $80,000 and",  # cut off
    }

    def fake(model, tok, prompts, **kw):
        return [
            Generation(t, 9, t.endswith("and"), "length" if t.endswith("and") else "eos")
            for t in (next(v for q, v in texts.items() if q in p) for p in prompts)
        ]

    out = tmp_path_factory.mktemp("lmeval") / "gsm8k"
    mp = pytest.MonkeyPatch()
    mp.setattr(bench_mod, "generate", fake)
    try:
        s = run_eval(model, "gsm8k", tokenizer=tok, limit=3, out_dir=out, progress=False)
    finally:
        mp.undo()
    return out, s


def test_results_json_has_lm_evals_keys_and_types(ours):
    out, summary = ours
    theirs = json.loads((FIX / "results.json").read_text())
    mine = json.loads((out / "results.json").read_text())
    _same_shape(mine, theirs, "results.json", deep=("config",))
    (t_task,) = theirs["results"]
    _same_shape(mine["results"]["gsm8k"], theirs["results"][t_task], "results[task]")
    _same_shape(mine["configs"]["gsm8k"], theirs["configs"][t_task], "configs[task]", deep=("generation_kwargs",))
    _same_shape(mine["n-samples"]["gsm8k"], theirs["n-samples"][t_task], "n-samples[task]")
    for k in ("versions", "n-shot", "higher_is_better"):
        assert _kind(mine[k]["gsm8k"]) == _kind(theirs[k][t_task]), k
    # the numbers are the summary's
    r = mine["results"]["gsm8k"]
    assert r["exact_match,strict-match"] == summary["accuracy"]["strict"]["acc"] == pytest.approx(1 / 3)
    assert r["exact_match,flexible-extract"] == summary["accuracy"]["flexible"]["acc"]
    assert r["exact_match_stderr,strict-match"] == pytest.approx((1 / 3 * 2 / 3 / 2) ** 0.5)  # sd(ddof=1)/sqrt(n)
    assert r["sample_len"] == 3 and mine["n-samples"]["gsm8k"] == {"original": 1319, "effective": 3}
    assert {f"exact_match,{f}" for f in ("boxed", "math_verify")} <= set(r)


def test_samples_jsonl_has_lm_evals_keys_and_types(ours):
    out, _ = ours
    theirs = [json.loads(line) for line in next(FIX.glob("samples_*.jsonl")).read_text().splitlines()]
    mine = [json.loads(line) for line in (out / "samples_gsm8k.jsonl").read_text().splitlines()]
    assert len(mine) == 3 * len(EXTRACTORS)  # one line per item and filter, as lm-eval writes (3 items x 2 there)
    for m in mine:
        _same_shape(m, theirs[0], "samples line", deep=("arguments",))
        assert _kind(m["resps"][0]) == "list" and _kind(m["resps"][0][0]) == "str"
        assert _kind(m["filtered_resps"][0]) == "str"
    by = {(m["doc_id"], m["filter"]): m for m in mine}
    assert set(f for _, f in by) >= {"strict-match", "flexible-extract"}  # lm-eval's gsm8k filter names
    assert by[(0, "strict-match")]["exact_match"] == 1.0 and by[(0, "strict-match")]["filtered_resps"] == ["18"]
    assert by[(2, "strict-match")]["filtered_resps"] == ["[invalid]"] and by[(2, "strict-match")]["exact_match"] == 0.0
    assert by[(1, "flexible-extract")]["target"] == "3" and by[(1, "flexible-extract")]["doc"]["id"] == "gsm8k-1"

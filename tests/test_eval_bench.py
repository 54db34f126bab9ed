"""run_eval end to end on a tiny model, resume, the `yfpo eval` / `yfpo compare` commands."""

from __future__ import annotations

import json

import pytest

import yfpo.eval.bench as bench_mod
from yfpo.data.problems import load_benchmark
from yfpo.engine.common import Generation
from yfpo.eval.bench import compare_items, load_items, run_eval, run_evals
from yfpo.eval.stats import wilson_ci
from yfpo.grading import EXTRACTORS, grade
from yfpo.models.tiny import save_tiny, tiny_model

ROW_KEYS = {"id", "question", "gold", "prompt", "output", "n_tokens", "truncated", "finish", "extracted", "correct"}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_run_eval_tiny_model(tiny, tmp_path):
    model, tok = tiny
    out = tmp_path / "gsm8k"
    s = run_eval(model, "gsm8k", tokenizer=tok, limit=3, out_dir=out, batch_size=2, max_new_tokens=6, progress=False)
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    probs = load_benchmark("gsm8k", limit=3)
    assert [r["id"] for r in rows] == [p.id for p in probs]
    for r, p in zip(rows, probs):
        assert set(r) == ROW_KEYS
        assert r["gold"] == p.answer and r["question"] == p.question
        assert p.question in r["prompt"] and r["prompt"].endswith("<|im_start|>assistant\n")
        assert set(r["extracted"]) == set(EXTRACTORS) and set(r["correct"]) == set(EXTRACTORS)
        assert r["correct"] == grade(r["output"], r["gold"])["correct"]
        assert r["n_tokens"] == 6 and r["finish"] == "length" and r["truncated"]
    disk = json.loads((out / "summary.json").read_text())
    assert disk == json.loads(json.dumps(s))
    assert s["n"] == 3 and s["bench"] == "gsm8k" and s["model"] == "tiny-llama-seed0"
    for e in EXTRACTORS:
        a = s["accuracy"][e]
        k = sum(r["correct"][e] for r in rows)
        assert (a["n"], a["n_correct"]) == (3, k) and a["acc"] == pytest.approx(k / 3)
        assert (a["lo"], a["hi"]) == pytest.approx(wilson_ci(k, 3))
    prot = s["protocol"]
    assert prot["decoding"] == "greedy" and prot["max_new_tokens"] == 6 and prot["shots"] == 0
    assert prot["extractors"] == list(EXTRACTORS) and prot["template"] and prot["instruction"]
    assert "torch" in s["versions"] and "transformers" in s["versions"]
    assert s["tokens_generated"] == 18 and s["tokens_per_s"] > 0 and s["truncated"] == 3
    assert (out / "protocol.json").exists()


def _fake_generate(answers: dict[str, str], calls: list):
    """A generate stand-in that answers each prompt with a fixed text (by the question it contains)."""

    def fake(model, tok, prompts, **kw):
        calls.append(len(prompts))
        res = []
        for p in prompts:
            text = next(v for q, v in answers.items() if q in p)
            res.append(Generation(text, 5, False, "eos"))
        return res

    return fake


def test_run_eval_known_outcome_and_resume(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    probs = load_benchmark("gsm8k", limit=4)
    outputs = {
        probs[0].question: f"So it is {probs[0].answer}.\nThe answer is {probs[0].answer}.",
        probs[1].question: f"The answer is {int(probs[1].answer) + 1}.",  # wrong
        probs[2].question: f"The total is \\boxed{{{probs[2].answer}}}",  # right, no answer line
        probs[3].question: "I do not know.",
    }
    calls: list[int] = []
    monkeypatch.setattr(bench_mod, "generate", _fake_generate(outputs, calls))
    out = tmp_path / "run"
    s = run_eval(model, "gsm8k", tokenizer=tok, limit=3, out_dir=out, progress=False)
    assert calls == [3]
    acc = {e: s["accuracy"][e]["n_correct"] for e in EXTRACTORS}
    assert acc == {"strict": 1, "flexible": 2, "boxed": 1, "math_verify": 2}
    assert (s["accuracy"]["flexible"]["lo"], s["accuracy"]["flexible"]["hi"]) == pytest.approx(wilson_ci(2, 3))

    # a rerun into the same folder skips finished items: nothing to generate for the same 3
    s2 = run_eval(model, "gsm8k", tokenizer=tok, limit=3, out_dir=out, progress=False)
    assert calls == [3] and s2["n"] == 3 and s2["new_items"] == 0
    assert s2["accuracy"] == s["accuracy"]
    # a larger limit generates only the new item
    s3 = run_eval(model, "gsm8k", tokenizer=tok, limit=4, out_dir=out, progress=False)
    assert calls == [3, 1] and s3["n"] == 4 and s3["new_items"] == 1
    assert len(load_items(out)) == 4 and len(load_items(out / "items.jsonl")) == 4
    assert s3["accuracy"]["flexible"]["n_correct"] == 2
    # a smaller limit reports on the first items only
    assert run_eval(model, "gsm8k", tokenizer=tok, limit=2, out_dir=out, progress=False)["n"] == 2
    # a torn last line (killed mid-write) is dropped and regenerated
    with open(out / "items.jsonl", "a") as f:
        f.write('{"id": "gsm8k-9", "outp')
    assert run_eval(model, "gsm8k", tokenizer=tok, limit=4, out_dir=out, progress=False)["n"] == 4
    # resuming under another protocol would mix outputs: refused
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_eval(model, "gsm8k", tokenizer=tok, limit=4, out_dir=out, max_new_tokens=99, progress=False)
    with pytest.raises(FileNotFoundError):
        load_items(tmp_path / "nothing")


def test_truncated_output_credited_by_flexible_is_marked_and_counted_wrong(tiny, tmp_path, monkeypatch):
    """The gsm8k-4 case: an output cut off at max_new_tokens whose last number is a quantity copied from the question
    (Wendi's 20 chickens) equals the gold; the flexible extractor credits it, the item is marked truncated, and the
    summary's accuracy with truncated outputs counted wrong does not."""
    model, tok = tiny
    probs = load_benchmark("gsm8k", limit=5)
    wendi = probs[4]
    assert wendi.id == "gsm8k-4" and wendi.answer == "20" and "20 chickens" in wendi.question
    cut = "Wendi gives 15 cups in the morning and 25 cups in the afternoon. She has 20"

    def fake(model, tok, prompts, **kw):
        res = []
        for pr in prompts:
            if wendi.question in pr:
                res.append(Generation(cut, kw["max_new_tokens"], True, "length"))
            else:
                p = next(p for p in probs if p.question in pr)
                res.append(Generation(f"The answer is {p.answer}.", 7, False, "eos"))
        return res

    monkeypatch.setattr(bench_mod, "generate", fake)
    s = run_eval(model, "gsm8k", tokenizer=tok, limit=5, out_dir=tmp_path / "ev", max_new_tokens=16, progress=False)
    rows = {r["id"]: r for r in load_items(tmp_path / "ev")}
    w = rows["gsm8k-4"]
    assert w["truncated"] is True and w["finish"] == "length"
    assert w["correct"]["flexible"] and not w["correct"]["strict"]
    assert not any(r["truncated"] for i, r in rows.items() if i != "gsm8k-4")
    assert s["accuracy"]["flexible"]["acc"] == 1.0 and s["accuracy"]["strict"]["acc"] == pytest.approx(0.8)
    t = s["truncation"]
    assert (t["n"], t["rate"]) == (1, pytest.approx(0.2))
    assert t["accuracy_if_truncated_wrong"]["flexible"] == pytest.approx(0.8)
    assert t["accuracy_if_truncated_wrong"]["strict"] == pytest.approx(0.8)
    assert set(t["accuracy_if_truncated_wrong"]) == set(EXTRACTORS)
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["truncation"] == json.loads(json.dumps(t))


def test_run_evals_one_pass_writes_what_run_eval_writes(tiny, tmp_path, monkeypatch):
    """Two benchmarks in one generate call; each folder gets the items, protocol and accuracy run_eval gives
    it alone, resumes on its own, and records the joint pass; its time is its share by generated tokens."""
    model, tok = tiny
    # (hf one prompt at a time: no padding, so outputs cannot depend on which prompts share a batch)
    kw = dict(tokenizer=tok, limit=3, max_new_tokens=6, batch_size=1, backend="hf", progress=False)
    alone = {b: run_eval(model, b, out_dir=tmp_path / "alone" / b, **kw) for b in ("gsm8k", "svamp")}
    real = bench_mod.generate
    calls: list[int] = []

    def counting(m, t, prompts, **k):
        calls.append(len(prompts))
        return real(m, t, prompts, **k)

    monkeypatch.setattr(bench_mod, "generate", counting)
    jobs = [{"bench": b, "out_dir": tmp_path / "joint" / b} for b in ("gsm8k", "svamp")]
    both = run_evals(model, jobs, **kw)
    assert calls == [6]  # one pass over both benchmarks' items
    for b, s in zip(("gsm8k", "svamp"), both):
        assert s["bench"] == b and s["n"] == 3 and s["accuracy"] == alone[b]["accuracy"]
        assert load_items(tmp_path / "joint" / b) == load_items(tmp_path / "alone" / b)
        assert s["protocol"] == alone[b]["protocol"]
        assert s["joint_pass"]["benches"] == ["gsm8k", "svamp"]
        assert s["joint_pass"]["tokens_generated"] == sum(a["tokens_generated"] for a in alone.values())
        assert json.loads((tmp_path / "joint" / b / "summary.json").read_text()) == json.loads(json.dumps(s))
    assert both[0]["time_s"] + both[1]["time_s"] == pytest.approx(both[0]["joint_pass"]["time_s"], abs=0.02)
    # resume: a larger limit generates only the new items of each benchmark, still in one call
    more = run_evals(model, jobs, **{**kw, "limit": 4})
    assert calls == [6, 2] and [s["n"] for s in more] == [4, 4] and [s["new_items"] for s in more] == [1, 1]
    # each folder still refuses another protocol, and a job takes only per-benchmark keys
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_evals(model, jobs, **{**kw, "max_new_tokens": 9})
    with pytest.raises(TypeError, match="shots"):
        run_evals(model, [{**jobs[0], "shots": 2}, jobs[1]], **kw)
    with pytest.raises(TypeError, match="nope"):
        run_evals(model, jobs, nope=1, **kw)


def _write_items(path, flags: dict[str, list[bool]], ids=None):
    n = len(next(iter(flags.values())))
    ids = ids or [f"q{i}" for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, id_ in enumerate(ids):
            f.write(json.dumps({"id": id_, "correct": {e: flags[e][i] for e in EXTRACTORS}}) + "\n")


A_FLAGS = [True] * 5 + [False] * 5
B_FLAGS = [True] * 9 + [False]


def _ab(tmp_path):
    a = {"strict": A_FLAGS, "flexible": A_FLAGS, "boxed": [False] * 10, "math_verify": A_FLAGS}
    b = {"strict": B_FLAGS, "flexible": B_FLAGS, "boxed": [False] * 10, "math_verify": A_FLAGS}
    _write_items(tmp_path / "a" / "items.jsonl", a)
    _write_items(tmp_path / "b" / "items.jsonl", b)
    # an item only A has is left out of the pairing
    with open(tmp_path / "a" / "items.jsonl", "a") as f:
        f.write(json.dumps({"id": "extra", "correct": {e: True for e in EXTRACTORS}}) + "\n")
    return tmp_path / "a", tmp_path / "b" / "items.jsonl"


def test_compare_items_known(tmp_path):
    a, b = _ab(tmp_path)
    res = compare_items(load_items(a), load_items(b), n_boot=2000)
    assert (res["n"], res["only_a"], res["only_b"]) == (10, 1, 0)
    f = res["by_extractor"]["flexible"]
    assert (f["acc_a"], f["acc_b"], f["b01"], f["b10"]) == (0.5, 0.9, 4, 0)
    assert f["diff"] == pytest.approx(0.4) and f["mcnemar_p"] == pytest.approx(0.125)
    assert f["ci_lo"] <= 0.4 <= f["ci_hi"]
    same = res["by_extractor"]["math_verify"]
    assert (same["diff"], same["mcnemar_p"], same["b01"], same["b10"]) == (0.0, 1.0, 0, 0)
    # 0 discordant among 10 items: an interval around 0 that is not zero-width (Newcombe's, not the bootstrap's)
    assert same["ci_lo"] < -0.05 and same["ci_hi"] > 0.05 and same["ci_method"] == "Newcombe hybrid score"
    assert same["ci_boot_lo"] == same["ci_boot_hi"] == 0.0
    assert res["by_extractor"]["boxed"]["acc_a"] == 0.0


def test_compare_cli(tmp_path, capsys):
    from yfpo.cli import main

    a, b = _ab(tmp_path)
    assert main(["compare", str(a), str(b), "--json", "--n-boot", "500"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["by_extractor"]["strict"]["mcnemar_p"] == pytest.approx(0.125)
    assert res["by_extractor"]["strict"]["diff"] == pytest.approx(0.4)
    assert main(["compare", str(a), str(b), "--n-boot", "500"]) == 0
    text = capsys.readouterr().out
    assert "0.125" in text and "+0.400" in text and "1 items only in A" in text
    assert main(["compare", str(tmp_path / "missing"), str(b)]) == 1


def test_eval_cli_tiny(tmp_path):
    from yfpo.cli import main

    mdir = save_tiny(tmp_path / "tiny")
    out = tmp_path / "eval"
    rc = main(
        [
            "eval",
            "--model",
            str(mdir),
            "--bench",
            "gsm8k,svamp",
            "--bench",
            "discrimination",
            "--limit",
            "2",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--backend",
            "hf",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    for b in ("gsm8k", "svamp"):
        s = json.loads((out / b / "summary.json").read_text())
        assert s["n"] == 2 and s["protocol"]["max_new_tokens"] == 4 and s["model"] == str(mdir)
        assert s["joint_pass"]["benches"] == ["gsm8k", "svamp"]  # one generation pass for both
        assert len((out / b / "items.jsonl").read_text().splitlines()) == 2
    d = json.loads((out / "discrimination" / "discrimination.json").read_text())
    assert d["n"] == 2 and 0.0 <= d["accuracy"] <= 1.0
    # rerun: resumes, same summary numbers
    assert (
        main(
            [
                "eval",
                "--model",
                str(mdir),
                "--bench",
                "gsm8k",
                "--limit",
                "2",
                "--max-new-tokens",
                "4",
                "--device",
                "cpu",
                "--backend",
                "hf",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    s = json.loads((out / "gsm8k" / "summary.json").read_text())
    assert s["new_items"] == 0 and s["n"] == 2

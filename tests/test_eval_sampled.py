"""Sampled metrics: pass@k against brute-force enumeration, maj@k tie rules, sampled run_eval + resume, compare."""

from __future__ import annotations

import itertools
import json
from math import comb

import pytest

import yfpo.eval.bench as bench_mod
from yfpo.data.problems import load_benchmark
from yfpo.engine.common import Generation, sample_seed
from yfpo.eval.bench import compare_items, run_eval
from yfpo.eval.sampled import ks_for, maj_at_k, majority_answer, pass_at_k
from yfpo.grading import EXTRACTORS


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        flags = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(flags[i] for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    assert len(subsets) == comb(n, n)


def test_pass_at_k_bad_args():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(3, 4, 1)


def test_maj_tie_rules():
    # majority wins regardless of order
    assert majority_answer(["1", "2", "2"]) == ("2", 1)
    # tie: the answer seen first wins
    assert majority_answer(["2", "1", "1", "2"]) == ("2", 0)
    assert majority_answer(["1", "2", "2", "1"]) == ("1", 0)
    # samples without an answer do not vote
    assert majority_answer([None, None, "7"]) == ("7", 2)
    assert majority_answer([None, None]) == (None, -1)
    # maj@k votes over the first k only and grades the winner
    ans, ok = ["5", "3", "3", "5", "5"], [True, False, False, True, True]
    assert maj_at_k(ans, ok, 1) is True
    assert maj_at_k(ans, ok, 3) is False
    assert maj_at_k(ans, ok, 4) is True  # tie 2-2: "5" came first
    assert maj_at_k([None, None], [False, False], 2) is False
    assert ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6] and ks_for(1) == [1]


def test_sample_seed_per_item():
    assert sample_seed(0, "a") == sample_seed(0, "a")
    assert sample_seed(0, "a") != sample_seed(1, "a") and sample_seed(0, "a") != sample_seed(0, "b")


def test_sampled_run_eval_resume_identical(tmp_path):
    """A sampled run interrupted and resumed writes the same samples as an uninterrupted one."""
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model()
    kw = dict(tokenizer=tok, max_new_tokens=5, progress=False, samples=3, temperature=1.0, top_p=0.95, seed=7)
    full = run_eval(model, "gsm8k", limit=3, out_dir=tmp_path / "full", **kw)
    run_eval(model, "gsm8k", limit=1, out_dir=tmp_path / "part", **kw)
    part = run_eval(model, "gsm8k", limit=3, out_dir=tmp_path / "part", **kw)
    a = [json.loads(x) for x in (tmp_path / "full" / "items.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "part" / "items.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in a] == [r["samples"] for r in b]
    assert all(len(r["samples"]) == 3 for r in a)
    assert len({s["output"] for r in a for s in r["samples"]}) > 1  # really sampled
    assert full["sampled"] == part["sampled"] and full["sampled"]["ks"] == [1, 2, 3]
    assert full["protocol"]["decoding"] == "sampling" and full["protocol"]["seed"] == 7
    with pytest.raises(ValueError, match="seed"):
        run_eval(model, "gsm8k", limit=3, out_dir=tmp_path / "part", **{**kw, "seed": 8})
    with pytest.raises(ValueError, match="temperature"):
        run_eval(model, "gsm8k", limit=3, tokenizer=tok, samples=4, progress=False)


def test_sampled_known_metrics_and_compare(tmp_path, monkeypatch):
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model()
    probs = load_benchmark("gsm8k", limit=2)
    g0, g1 = probs[0].answer, probs[1].answer
    texts = {
        probs[0].question: [f"The answer is {g0}.", "The answer is 1.", "The answer is 1.", f"The answer is {g0}."],
        probs[1].question: ["The answer is 1.", "no idea", "The answer is 1.", f"The answer is {g1}."],
    }

    def fake(model, tok, prompts, num_return_sequences=1, **kw):
        assert kw["do_sample"] and len(kw["seeds"]) == len(prompts)  # items share calls, each seeded on its own
        out = []
        for p in prompts:
            q = next(q for q in texts if q in p)
            # "no idea" stands for an output cut off at max_new_tokens
            out += [
                Generation(t, 4, t == "no idea", "length" if t == "no idea" else "eos")
                for t in texts[q][:num_return_sequences]
            ]
        return out

    monkeypatch.setattr(bench_mod, "generate", fake)
    s = run_eval(
        model, "gsm8k", tokenizer=tok, limit=2, out_dir=tmp_path / "s", progress=False, samples=4, temperature=0.7
    )
    d = s["sampled"]["by_extractor"]["strict"]
    assert d["avg"]["mean"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert d["pass"]["4"]["mean"] == pytest.approx(1.0)
    assert d["pass"]["1"]["mean"] == pytest.approx((0.5 + 0.25) / 2)
    assert d["pass"]["2"]["mean"] == pytest.approx(((1 - comb(2, 2) / comb(4, 2)) + (1 - comb(3, 2) / comb(4, 2))) / 2)
    # item 0: tie 2-2 at k=4, gold came first -> right; item 1: "1" twice -> wrong
    assert d["maj"]["4"]["n_correct"] == 1 and d["maj"]["1"]["n_correct"] == 1
    assert s["answer_length"]["mean_tokens"] == 4
    # one of 8 samples was cut off; the items' own numbers are sample 0's (neither cut off)
    assert s["truncation"]["samples_rate"] == pytest.approx(1 / 8) and s["truncation"]["n"] == 0
    # compare against a greedy run: per-item success rates
    rows_s = [json.loads(x) for x in (tmp_path / "s" / "items.jsonl").read_text().splitlines()]
    greedy = [{"id": r["id"], "correct": {e: True for e in EXTRACTORS}} for r in rows_s]
    res = compare_items(greedy, rows_s, n_boot=500)
    st = res["by_extractor"]["strict"]
    assert res["unit"].startswith("per-item success rate")
    assert st["acc_a"] == 1.0 and st["acc_b"] == pytest.approx(0.375) and st["diff"] == pytest.approx(-0.625)
    assert 0 < st["mcnemar_p"] <= 1 and st["test"].startswith("sign-flip")

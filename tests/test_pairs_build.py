"""Pairs stage: pure pairing / cleaning / gold rewrite, the resumable build and Step-DPO pairs (fake generator)."""

from __future__ import annotations

import collections
import hashlib
import json
import re
from collections import namedtuple

import pytest

from yfpo.data.pairs import load_pairs
from yfpo.data.problems import Problem
from yfpo.pairs.build import build_pairs, clean_samples, gold_response, make_pairs, summarize
from yfpo.pairs.config import PairsConfig
from yfpo.pairs.steps import first_wrong_step, split_steps, step_pair

Gen = namedtuple("Gen", "text n_tokens truncated")


def grade(output: str, gold: str) -> bool:
    nums = re.findall(r"-?\d+", output)
    return bool(nums) and nums[-1] == gold


def S(text, correct, truncated=False):
    return {"text": text, "correct": correct, "truncated": truncated, "n_tokens": len(text.split())}


def test_gold_response_rewrites_to_answer_format():
    g = gold_response("He has 3+4=<<3+4=7>>7 apples.\nSo 7 in total.\n#### 7", "7")
    assert g == "He has 3+4=7 apples.\nSo 7 in total.\nThe answer is 7."
    assert gold_response(None, "7") is None and gold_response("  ", "7") is None


def test_clean_samples_drops_empty_truncated_duplicates():
    kept, drops = clean_samples(
        [S("a 1", True), S("  ", False), S("b 2", False, truncated=True), S("a   1", True), S("c 3", False)]
    )
    assert [s["text"] for s in kept] == ["a 1", "c 3"]
    assert drops == {"empty": 1, "truncated": 1, "duplicate": 1}


def test_make_pairs_self_capped_and_diverse():
    samples = [S("good one 5", True), S("good two 5", True), S("bad one 4", False), S("bad two 3", False)]
    prs = make_pairs("Q", "5", samples, "gold 5", max_pairs=2, seed=0)
    assert len(prs) == 2 and all(p["source"] == "self" for p in prs)
    assert len({p["chosen"] for p in prs}) == 2 and len({p["rejected"] for p in prs}) == 2  # no reuse before all used
    assert all(p["chosen"].startswith("good") and p["rejected"].startswith("bad") for p in prs)
    assert len(make_pairs("Q", "5", samples, None, max_pairs=10, seed=0)) == 4  # all combinations at most
    assert make_pairs("Q", "5", samples, None, max_pairs=2, seed=0) == make_pairs(
        "Q", "5", samples, None, max_pairs=2, seed=0
    )


def test_make_pairs_gold_fallback_and_no_pairs_cases():
    bad = [S("bad 4", False), S("bad 3", False), S("", False), S("trunc", False, truncated=True)]
    prs = make_pairs("Q", "5", bad, "gold\nThe answer is 5.", max_pairs=5)
    assert [p["source"] for p in prs] == ["gold", "gold"]  # empty and truncated samples never become pairs
    assert {p["rejected"] for p in prs} == {"bad 4", "bad 3"}
    assert make_pairs("Q", "5", bad, "gold", max_pairs=5, gold_fallback=False) == []
    assert make_pairs("Q", "5", [S("ok 5", True), S("ok 5 again", True)], "gold", max_pairs=5) == []  # all correct


class FakeGen:
    """Deterministic sampler: sample j of a prompt is right iff hash(prompt, seed, j) says so."""

    def __init__(self, fail_after_calls=None):
        self.calls, self.prompts, self.fail_after = 0, [], fail_after_calls

    def __call__(self, prompts, *, max_new_tokens, do_sample, temperature, top_p, num_return_sequences, seed):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            gold = re.search(r"gold=(\d+)", p).group(1)
            for j in range(num_return_sequences):
                h = int(hashlib.sha256(f"{p}|{seed}|{j}".encode()).hexdigest(), 16)
                if h % 7 == 0:
                    out.append(Gen("", 0, False))
                elif h % 7 == 1:
                    out.append(Gen("long long", max_new_tokens, True))
                elif h % 3 == 0:
                    out.append(Gen(f"step a\nThe answer is {gold}.", 9, False))
                else:
                    out.append(Gen(f"step b {h % 100}\nThe answer is {int(gold) + 1 + h % 5}.", 9, False))
        return out


def _problems(n=10):
    return [
        Problem(f"t-{i}", f"Q{i} gold={i + 10}", str(i + 10), f"Work {i}.<<1+1=2>>\n#### {i + 10}", "t")
        for i in range(n)
    ]


def _cfg(tmp_path, name="p", **kw):
    base = dict(out_dir=str(tmp_path / name), k=4, batch_size=8, limit=None, max_pairs_per_question=2, progress=False)
    base.update(kw)
    return PairsConfig(**base)


KW = dict(template_fn=lambda q: f"<chat>Solve: {q}</chat>", grade_fn=grade, message_fn=lambda q: f"Solve: {q}")


def test_build_pairs_end_to_end_files_and_summary(tmp_path):
    gen = FakeGen()
    path = build_pairs(_cfg(tmp_path), generate_fn=gen, problems=_problems(), **KW)
    rows = [json.loads(l) for l in (path.parent / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"t-{i}" for i in range(10)]
    assert all(len(r["samples"]) == 4 for r in rows)
    pairs = load_pairs(path)  # validates the shared format
    summ = json.loads((path.parent / "summary.json").read_text())
    assert summ["questions"] == 10 and summ["samples"] == 40 and summ["pairs"] == len(pairs) > 0
    n_corr = sum(s["correct"] for r in rows for s in r["samples"])
    assert summ["sample_accuracy"] == pytest.approx(n_corr / 40)
    assert sum(summ["pairs_by_source"].values()) == len(pairs)
    by_q = {}
    for p in pairs:
        by_q.setdefault(p.extra["question_id"], []).append(p)
        assert p.prompt.startswith("Solve: Q") and p.chosen != p.rejected
        assert grade(p.chosen, p.answer) and not grade(p.rejected, p.answer)
        if p.source == "gold":
            assert p.chosen.endswith(f"The answer is {p.answer}.") and "<<" not in p.chosen
    assert max(len(v) for v in by_q.values()) <= 2
    for r in rows:  # gold only where no sample was correct
        srcs = {p.source for p in by_q.get(r["id"], [])}
        if any(s["correct"] for s in r["samples"]):
            assert "gold" not in srcs
    assert len(gen.prompts) == 10


def test_build_pairs_resume_after_kill_matches_uninterrupted(tmp_path):
    full = build_pairs(_cfg(tmp_path, "full"), generate_fn=FakeGen(), problems=_problems(), **KW)
    killed = FakeGen(fail_after_calls=2)  # 2 chunks of 2 questions, then "killed"
    with pytest.raises(KeyboardInterrupt):
        build_pairs(_cfg(tmp_path, "r"), generate_fn=killed, problems=_problems(), **KW)
    out = tmp_path / "r"
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4
    # a kill between the pairs append and the samples row leaves pairs of an unfinished question: dropped on resume
    with open(out / "pairs.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "x", "chosen": "a", "rejected": "b", "question_id": "t-9"}) + "\n")
        f.write('{"prompt": "torn')
    again = FakeGen()
    path = build_pairs(_cfg(tmp_path, "r"), generate_fn=again, problems=_problems(), **KW)
    assert len(again.prompts) == 6  # only unfinished questions were sampled
    assert path.read_text() == full.read_text()
    assert (out / "samples.jsonl").read_text() == (tmp_path / "full" / "samples.jsonl").read_text()
    third = FakeGen()
    build_pairs(_cfg(tmp_path, "r"), generate_fn=third, problems=_problems(), **KW)
    assert third.calls == 0


class BatchGen(FakeGen):
    """Like a real batched sampler: every sample depends on the whole batch (padding, RNG stream), not only
    on its own prompt, so a chunk redone with fewer prompts would sample differently."""

    def __call__(self, prompts, **kw):
        batch = "|".join(prompts)
        out = super().__call__([p + f" batch={hashlib.sha256(batch.encode()).hexdigest()[:6]}" for p in prompts], **kw)
        return out


@pytest.mark.parametrize("cut", [1, 3, 5, 8])  # rows finished before the kill; cut 1, 3, 5 fall mid-chunk
def test_build_pairs_resumed_mid_chunk_equals_uninterrupted_byte_for_byte(tmp_path, cut):
    cfg = dict(batch_size=12, k=4, step_pairs=False)  # chunks of 3 questions
    full = build_pairs(_cfg(tmp_path, "full", **cfg), generate_fn=BatchGen(), problems=_problems(), **KW).parent
    out = tmp_path / "r"
    build_pairs(_cfg(tmp_path, "r", **cfg), generate_fn=BatchGen(), problems=_problems(), **KW)
    # simulate a kill after `cut` questions: keep their rows and pairs, plus a torn line in each file
    rows = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    keep = {json.loads(l)["id"] for l in rows[:cut]}
    (out / "samples.jsonl").write_text("".join(rows[:cut]) + rows[cut][:17])
    prs = [
        l for l in (out / "pairs.jsonl").read_text().splitlines(keepends=True) if json.loads(l)["question_id"] in keep
    ]
    (out / "pairs.jsonl").write_text("".join(prs) + '{"prompt": "to')
    (out / "summary.json").unlink()
    again = BatchGen()
    build_pairs(_cfg(tmp_path, "r", **cfg), generate_fn=again, problems=_problems(), **KW)
    assert len(again.prompts) == 10 - 3 * (cut // 3)  # the cut chunk is redone whole
    for name in ("samples.jsonl", "pairs.jsonl"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name


def test_build_pairs_refuses_other_config_in_same_folder(tmp_path):
    from yfpo.resume import ResumeConflict

    build_pairs(_cfg(tmp_path, "a"), generate_fn=FakeGen(), problems=_problems(4), **KW)
    with pytest.raises(ResumeConflict, match=r"k: 4 -> 6.*--overwrite"):
        build_pairs(_cfg(tmp_path, "a", k=6), generate_fn=FakeGen(), problems=_problems(4), **KW)
    build_pairs(_cfg(tmp_path, "a", k=6), generate_fn=FakeGen(), problems=_problems(4), overwrite=True, **KW)
    rows = [json.loads(l) for l in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert all(len(r["samples"]) == 6 for r in rows)


def test_build_pairs_offset_limit_and_seed(tmp_path):
    gen = FakeGen()
    build_pairs(_cfg(tmp_path, "a", offset=3, limit=4), generate_fn=gen, problems=_problems(), **KW)
    rows = [json.loads(l) for l in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["t-3", "t-4", "t-5", "t-6"]
    build_pairs(_cfg(tmp_path, "b", offset=3, limit=4, seed=1), generate_fn=FakeGen(), problems=_problems(), **KW)
    rows_b = [json.loads(l) for l in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows] != [r["samples"] for r in rows_b]


def test_summarize_counts():
    rows = [{"samples": [S("a", True), S("b", False)], "drops": {"empty": 1}}, {"samples": [S("c", True)], "drops": {}}]
    s = summarize(rows, [{"source": "self", "question_id": "x"}])
    assert s["samples"] == 3 and s["sample_accuracy"] == pytest.approx(2 / 3)
    assert s["questions_all_correct"] == 1 and s["pairs_by_source"] == {"self": 1} and s["dropped"] == {"empty": 1}


# ----------------------------------------------------------------------------- step pairs


def test_split_steps_and_first_wrong_step():
    assert split_steps("a\n\n  b \nc") == ["a", "b", "c"]
    assert first_wrong_step([1.0, 0.75, 0.0, 0.0], 5) == 1
    assert first_wrong_step([1.0, 0.5, 0.5], 3) == 2  # full incorrect solution counts as rate 0
    assert first_wrong_step([0.0, 0.0], 2) is None  # hopeless from the start
    assert first_wrong_step([1.0, 1.0], 6) is None  # no drop in the probed steps


def test_step_pair_finds_the_wrong_step():
    sample = "Tom has 3 apples.\nHe buys 4 more, so 3*4 = 12.\nThe answer is 12."

    def gen(prompts, *, max_new_tokens, do_sample, temperature, top_p, num_return_sequences, seed):
        out = []
        for p in prompts:
            wrong = "3*4" in p
            for j in range(num_return_sequences):
                if wrong:
                    out.append(Gen("So he has 12.\nThe answer is 12.", 5, False))
                elif j % 2 == 0:
                    out.append(Gen("He buys 4 more, so 3+4 = 7.\nThe answer is 7.", 5, False))
                else:
                    out.append(Gen("Not sure.\nThe answer is 8.", 5, False))
        return out

    pair, info = step_pair("Q?", "<chat>Q?</chat>", sample, "7", generate_fn=gen, grade_fn=grade, n_rollouts=4)
    assert info["rates"] == [0.5, 0.5, 0.0]
    assert info["first_wrong"] == 1
    assert pair["initial_reason_steps"] == "Tom has 3 apples.\n"
    assert pair["rejected"] == "He buys 4 more, so 3*4 = 12."
    assert pair["chosen"] == "He buys 4 more, so 3+4 = 7."
    assert pair["source"] == "step"


def test_build_with_step_pairs_writes_valid_step_file(tmp_path):
    cfg = _cfg(tmp_path, "s", step_pairs=True, step_rollouts=2, k=2, step_max_new_tokens=64)

    def gen(prompts, *, max_new_tokens, do_sample, temperature, top_p, num_return_sequences, seed):
        out = []
        for p in prompts:
            gold = re.search(r"gold=(\d+)", p).group(1)
            for j in range(num_return_sequences):
                if max_new_tokens == cfg.max_new_tokens:  # question sampling: all wrong
                    out.append(Gen(f"First fine.\nThen wrong {j}.\nThe answer is 0.", 5, False))
                elif "wrong" in p:
                    out.append(Gen("The answer is 0.", 3, False))
                else:
                    out.append(Gen(f"Then right.\nThe answer is {gold}.", 3, False))
        return out

    build_pairs(cfg, generate_fn=gen, problems=_problems(3), **KW)
    steps = load_pairs(tmp_path / "s" / "step_pairs.jsonl")
    assert len(steps) == 3 and all(p.is_step for p in steps)
    assert all(p.initial_reason_steps == "First fine.\n" and p.chosen == "Then right." for p in steps)
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["step_pairs"] == 3
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["pairs_by_source"] == {"gold": 6}


def test_build_pairs_real_generate_on_tiny_model_reproducible(tmp_path):
    """The default wiring (yfpo.eval generate / build_prompt / is_correct) on a saved tiny model: rows are
    written, truncation is recorded, and the same seed gives the same samples."""
    from yfpo.models.tiny import save_tiny

    model_dir = save_tiny(tmp_path / "tiny")
    outs = []
    for name in ("a", "b"):
        cfg = PairsConfig(
            model=str(model_dir),
            out_dir=str(tmp_path / name),
            limit=3,
            k=2,
            max_new_tokens=6,
            batch_size=4,
            progress=False,
            backend="hf",
        )
        build_pairs(cfg)
        outs.append((tmp_path / name / "samples.jsonl").read_text())
    rows = [json.loads(l) for l in outs[0].splitlines()]
    assert len(rows) == 3 and all(len(r["samples"]) == 2 for r in rows)
    assert all(s["truncated"] == (s["n_tokens"] >= 6) for r in rows for s in r["samples"])
    assert rows[0]["prompt"].startswith(rows[0]["question"].strip())
    assert outs[0] == outs[1]
    summ = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summ["questions"] == 3 and summ["samples"] == 6


def test_pairs_cli_on_tiny_model(tmp_path, capsys):
    from yfpo.cli import main
    from yfpo.models.tiny import save_tiny

    model_dir = save_tiny(tmp_path / "tiny")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"pairs: {{model: {model_dir}, limit: 2, k: 2, max_new_tokens: 4, progress: false}}\n")
    rc = main(["pairs", "build", "--config", str(cfg), "--out_dir", str(tmp_path / "out"), "--backend", "hf"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 questions, 4 samples" in out and "wrote" in out
    assert main(["pairs", "build", "--out_dir", str(tmp_path / "o2"), "--k", "two"]) == 1
    assert "expected an integer" in capsys.readouterr().err


class SeededGen(FakeGen):
    """FakeGen whose sample j of a prompt depends on that prompt's own seed (generate's seeds=), as the engine's."""

    def __call__(self, prompts, *, seeds, seed, **kw):
        self.seeds = getattr(self, "seeds", []) + list(seeds)
        return [g for p, s in zip(prompts, seeds) for g in FakeGen.__call__(self, [p], seed=s, **kw)]


def test_onpolicy_pairs_only_the_models_own_answers_where_it_sometimes_solves(tmp_path):
    probs = _problems(30)
    path = build_pairs(
        _cfg(tmp_path, "on", mode="onpolicy", k=6, batch_size=60), generate_fn=SeededGen(), problems=probs, **KW
    )
    rows = [json.loads(line) for line in (path.parent / "samples.jsonl").read_text().splitlines()]
    pairs = load_pairs(path)
    summ = json.loads((path.parent / "summary.json").read_text())
    rate = {r["id"]: sum(s["correct"] for s in r["samples"]) for r in rows}
    assert all(p.source == "self" for p in pairs) and pairs
    assert {p.extra["question_id"] for p in pairs} <= {i for i, c in rate.items() if 0 < c < 6}
    assert any(c == 0 for c in rate.values())  # ... and such questions gave no gold pair
    assert summ["pass_rate_histogram"] == {f"{c}/6": n for c, n in sorted(collections.Counter(rate.values()).items())}
    assert summ["questions_pass_rate_between_0_and_1"] == sum(0 < c < 6 for c in rate.values())
    assert summ["pairs_share_by_source"] == {"self": 1.0}
    # per-question seeds: another chunking (batch_size) gives the same samples and pairs
    narrow = build_pairs(
        _cfg(tmp_path, "narrow", mode="onpolicy", k=6, batch_size=6), generate_fn=SeededGen(), problems=probs, **KW
    )
    assert (narrow.parent / "samples.jsonl").read_text() == (path.parent / "samples.jsonl").read_text()
    assert narrow.read_text() == path.read_text()
    with pytest.raises(ValueError, match="mode must be one of default, onpolicy"):
        _cfg(tmp_path, mode="offpolicy").validate()

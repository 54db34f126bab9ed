"""Robustness: numbers and protected words are never replaced; attack loop on a tiny model; WordNet reader."""

from __future__ import annotations

import json
import random
import re

import pytest

from yfpo.data.problems import load_benchmark
from yfpo.eval.robustness import (
    Candidates,
    attack_item,
    read_wordnet,
    replace_word,
    run_robustness,
    split_words,
    substitutable,
)


def _numbers(text):
    return re.findall(r"\d+(?:\.\d+)?", text)


def test_substitutable_never_touches_numbers():
    q = "Sam has 3 apples and 2.5 pears. He buys twenty more oranges each day. How many fruits does Sam have?"
    toks = split_words(q)
    assert "".join(toks) == q
    words = [toks[i] for i in substitutable(toks)]
    assert not any(any(c.isdigit() for c in w) for w in words)
    assert "apples" not in words and "pears." not in words  # the unit right after a number
    assert "twenty" not in [w.lower() for w in words] and "more" not in words and "each" not in words
    assert "buys" not in words and "Sam" not in words  # an operation word; a word the question repeats
    assert "fruits" in words and "oranges" in words


def test_random_perturbations_keep_every_number():
    rng = random.Random(0)
    probs = load_benchmark("gsm8k", limit=40)
    for p in probs:
        toks = split_words(p.question)
        for i in substitutable(toks):
            new = replace_word(toks, i, rng.choice(["zebra", "Quux", "lamp"]))
            assert _numbers(new) == _numbers(p.question)


def test_replace_word_keeps_case_and_punctuation():
    toks = split_words("Tom baked cookies, then left.")
    assert replace_word(toks, 4, "muffins") == "Tom baked muffins, then left."
    assert replace_word(toks, 0, "sam") == "Sam baked cookies, then left."


def test_wordnet_reader(tmp_path):
    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text("  1 licence line\n")
    (tmp_path / "data.noun").write_text(
        "  1 licence\n02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 000 | a dog\n"
        "02121620 05 n 02 cat 0 true_cat 0 000 | a cat\n03000000 06 n 02 car 0 auto 0 000 | x\n"
    )
    syn = read_wordnet(tmp_path)
    assert syn["car"] == {"auto"} and syn["auto"] == {"car"} and "dog" not in syn.get("cat", set())
    with pytest.raises(FileNotFoundError, match="not a WordNet dict folder"):
        read_wordnet(tmp_path / "nope")


def test_attack_on_tiny_model(tmp_path):
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model()
    cands = Candidates(model, tok, sim_threshold=-1.0, top_k=3, wordnet={"apples": {"pomes"}})
    q = "Sam picked 3 apples from the garden. How many were picked?"
    toks = split_words(q)
    seen = []
    for i in substitutable(toks):
        for w, src, sim in cands.for_position(toks, i):
            seen.append(src)
            assert _numbers(replace_word(toks, i, w)) == ["3"]
    assert seen  # the tiny model's vocabulary gives candidates

    asked = []

    def ask(questions):  # a fake model: wrong once the word "garden" is gone
        asked.extend(questions)
        return [("The answer is 3.", 5, "garden" in x) for x in questions]

    r = attack_item(q, "3", "number", ask, cands, budget=50)
    garden_pos = toks.index("garden.")
    assert cands.for_position(toks, garden_pos)
    assert r["success"] and r["original_word"] == "garden" and r["queries"] == len(asked)
    assert _numbers(r["perturbed"]) == ["3"] and "garden" not in r["perturbed"]
    r2 = attack_item(q, "3", "number", lambda qs: [("x", 1, True) for _ in qs], cands, budget=2)
    assert not r2["success"] and r2["queries"] <= 2

    probs = load_benchmark("gsm8k", limit=2)
    s = run_robustness(
        model,
        tok,
        probs,
        n_items=2,
        budget=2,
        sim_threshold=-1.0,
        top_k=2,
        sources=("embedding",),
        max_new_tokens=3,
        out_dir=tmp_path / "rob",
        backend="hf",
    )
    assert s["pool"] == 2 and 0 <= s["pool_accuracy"] <= 1 and s["attacked"] <= 2
    assert (tmp_path / "rob" / "summary.json").exists() and (tmp_path / "rob" / "perturbed.jsonl").exists()
    assert json.loads((tmp_path / "rob" / "summary.json").read_text())["settings"]["budget"] == 2


def test_robustness_resumes_controls_stability_and_refuses_other_settings(tmp_path, monkeypatch):
    """Pool answers and attacked items are kept as they finish: a rerun after a kill generates only what is
    missing and gives the same result; an item answered wrongly when asked again unchanged is not attacked;
    a folder made with other settings is refused."""
    import yfpo.engine.generate as gen_mod
    from yfpo.engine.common import Generation
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model()
    probs = load_benchmark("gsm8k", limit=6)
    calls = {"n": 0, "prompts": 0, "again": {}}
    golds = {p.question: p.answer for p in probs}

    def fake_generate(model, tokenizer, prompts, **kw):
        calls["n"] += 1
        calls["prompts"] += len(prompts)
        out = []
        for pr in prompts:
            q = next((q for q in golds if q in pr), None)
            if q is None:  # a perturbed question: wrong answer
                out.append(Generation(text="The answer is -1.", n_tokens=4, truncated=False))
            elif len(prompts) == 1 and q == probs[1].question:  # asked again alone: unstable
                out.append(Generation(text="The answer is -1.", n_tokens=4, truncated=False))
            else:  # the original question: correct for items 0-3
                ok = q in [p.question for p in probs[:4]]
                out.append(Generation(text=f"The answer is {golds[q] if ok else -1}.", n_tokens=6, truncated=False))
        return out

    monkeypatch.setattr(gen_mod, "generate", fake_generate)
    kw = dict(
        n_items=2,
        budget=3,
        sim_threshold=-1.0,
        top_k=2,
        sources=("embedding",),
        max_new_tokens=3,
        batch_size=1,
        out_dir=tmp_path / "rob",
        backend="hf",
        progress=False,
    )
    s = run_robustness(model, tok, probs, **kw)
    assert s["pool_accuracy"] == pytest.approx(4 / 6) and s["attacked"] == 2 and s["unstable"] == 1
    assert s["unstable_ids"] == [probs[1].id] and s["attack_success_rate"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "rob" / "robustness.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows if r["stable"]} == {probs[0].id, probs[2].id}
    first = calls["prompts"]

    # a "kill" after the pool and the first attacked item: the rerun redoes only the rest
    work = tmp_path / "rob" / "work"
    att = work / "attacks.jsonl"
    att.write_text(att.read_text().splitlines(keepends=True)[0] + '{"id": "torn')
    calls["prompts"] = 0
    s2 = run_robustness(model, tok, probs, **kw)
    assert {k: v for k, v in s2.items() if k not in ("date", "time_s")} == {
        k: v for k, v in s.items() if k not in ("date", "time_s")
    }
    assert 0 < calls["prompts"] < first and len(att.read_text().splitlines()) == 3
    calls["prompts"] = 0
    run_robustness(model, tok, probs, **kw)
    assert calls["prompts"] == 0  # everything kept: nothing generated again

    with pytest.raises(ValueError, match="was made by another robustness config \\(settings.budget: 3 -> 4\\)"):
        run_robustness(model, tok, probs, **{**kw, "budget": 4})
    calls["prompts"] = 0
    s5 = run_robustness(model, tok, probs, **{**kw, "budget": 4, "overwrite": True})  # emptied, done again
    assert calls["prompts"] >= first and s5["settings"]["budget"] == 4
    # a larger pool of the same benchmark continues a smaller one; another pool in the folder is refused
    kw2 = {**kw, "out_dir": tmp_path / "rob2"}
    run_robustness(model, tok, probs[:3], **kw2)
    calls["prompts"] = 0
    s3 = run_robustness(model, tok, probs, **kw2)
    assert s3["pool_accuracy"] == s["pool_accuracy"] and s3["attacked"] == 2
    assert calls["prompts"] == 3  # only the 3 new pool items: items #0 and #2 were attacked with the short pool
    with pytest.raises(ValueError, match="are not this pool's first 6"):
        run_robustness(model, tok, probs[::-1], **kw2)
    # stop_when_found: the pool is evaluated chunk by chunk (4 x batch_size items) only until n_items are attacked
    s4 = run_robustness(
        model, tok, probs, **{**kw, "out_dir": tmp_path / "rob3", "n_items": 1, "stop_when_found": True}
    )
    assert s4["pool"] == 4 and s4["pool_size"] == 6 and s4["attacked"] == 1 and s4["pool_accuracy"] == 1.0


def test_candidates_never_repeat_a_word_of_the_question_or_inflect_the_word():
    """A replacement already in the question ("lunch" -> "dinner" when "dinner" is there) would merge two things
    the question keeps apart; an inflection (washed -> washes) is a grammar change, not a substitution."""
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model()
    wn = {"lunch": {"dinner", "supper"}, "washed": {"washes", "washing", "cleaned"}}
    cands = Candidates(model, tok, sim_threshold=-1.0, top_k=5, wordnet=wn, sources=("wordnet",))
    toks = split_words("A cook served 4 pies during lunch and 9 during dinner. Ned washed 3 shirts.")
    got = {toks[i].strip(".,"): [w for w, _, _ in cands.for_position(toks, i)] for i in substitutable(toks)}
    assert got["lunch"] == ["supper"] and got["washed"] == ["cleaned"]


def test_wordnet_number_words_never_become_candidates(tmp_path):
    """WordNet files number concepts as synsets of a numeral and words for it ("two, 2, II, deuce"; "one, 1, I, ace,
    single, unity"; "twelve, 12, XII, dozen"): none of them may replace a word, and a number word in the question is
    never replaced by them either. The lines are WordNet 3.0's data.noun format; the lemmas are the real synsets'."""
    from yfpo.models.tiny import tiny_model

    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text("  1 licence line\n")
    (tmp_path / "data.noun").write_text(
        "  1 licence\n"
        "13743269 23 n 04 two 0 2 0 II 0 deuce 0 000 | the cardinal number that is the sum of one and one\n"
        "13742358 23 n 06 one 0 1 0 I 0 ace 0 single 0 unity 0 000 | the smallest whole number\n"
        "13746512 23 n 04 twelve 0 12 0 XII 0 dozen 0 000 | the cardinal number that is the sum of eleven and one\n"
        "03000000 06 n 02 coin 0 mint 0 000 | x\n"
        "04000000 06 n 02 card 0 ace 0 000 | a playing card\n"
    )
    wn = read_wordnet(tmp_path)
    numbers = {"two", "2", "ii", "deuce", "one", "1", "i", "single", "unity", "twelve", "12", "xii", "dozen"}
    assert not numbers & {w for syns in wn.values() for w in syns}  # no number synset contributes a synonym
    assert wn["ace"] == {"card"} and wn["coin"] == {"mint"}  # (the playing-card sense of ace stays)
    model, tok = tiny_model()
    cands = Candidates(model, tok, sim_threshold=-1.0, top_k=10, wordnet=wn, sources=("wordnet",))
    toks = split_words("He drew an ace and a coin, then rolled a deuce twice for a dozen rounds.")
    got = {toks[i].strip(".,"): [w for w, _, _ in cands.for_position(toks, i)] for i in substitutable(toks)}
    assert got["ace"] == ["card"] and got["coin"] == ["mint"] and got.get("deuce", []) == []
    assert "dozen" not in got and "twice" not in got  # number words are never substituted themselves
    assert not numbers & {w.lower() for ws in got.values() for w in ws}

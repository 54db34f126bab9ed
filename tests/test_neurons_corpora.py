"""Math and contrast corpora from ../shared/data."""

from yfpo.data.corpora import contrast_corpus, gsm8k_solution_response, is_math_like, math_corpus


def test_gsm8k_response_format():
    r = gsm8k_solution_response("She has 2+3 = <<2+3=5>>5 apples.\n#### 5", "5")
    assert r == "She has 2+3 = 5 apples.\nThe answer is 5."


def test_math_corpus():
    recs = math_corpus(20, seed=3)
    assert len(recs) == 20 and len({r.id for r in recs}) == 20
    assert all(r.response.endswith(".") and "The answer is" in r.response and "<<" not in r.response for r in recs)
    assert [r.id for r in math_corpus(20, seed=3)] == [r.id for r in recs]
    assert [r.id for r in math_corpus(20, seed=4)] != [r.id for r in recs]
    assert all(r.source == "gsm8k" for r in math_corpus(3, split="test"))


def test_contrast_corpus_is_general_and_mixed():
    recs = contrast_corpus(200, seed=0)
    assert len(recs) == 200 and len({r.id for r in recs}) == 200
    assert not any(is_math_like(r.prompt + "\n" + r.response) for r in recs)
    srcs = [r.source for r in recs]
    assert srcs[:4] == ["self_instruct_human", "dolly15k_prompts"] * 2
    assert all(r.response.strip() for r in recs)
    assert is_math_like("Calculate 12 * 4") and is_math_like("what is 3 + 4") and not is_math_like("Write a poem")
    # a longer corpus with the same seed extends the shorter one
    assert [r.id for r in contrast_corpus(300, seed=0)[:200]] == [r.id for r in recs]

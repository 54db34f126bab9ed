"""Teacher-forced log-likelihood, pair discrimination and MMLU retention on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

import yfpo.eval.discrimination as disc_mod
import yfpo.eval.mmlu as mmlu_mod
from yfpo.data.pairs import load_solution_pairs
from yfpo.engine.prompts import build_prompt
from yfpo.eval.discrimination import run_discrimination
from yfpo.eval.loglik import next_token_logprobs, response_logprobs
from yfpo.eval.mmlu import letter_token_ids, mmlu_prompt, run_mmlu, score_rows
from yfpo.models.tiny import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _direct(model, tok, prompt: str, response: str) -> tuple[float, int]:
    """Sum of log p(response tokens | prefix), one unpadded sequence, written out token by token."""
    p = tok(prompt, add_special_tokens=False).input_ids
    r = tok(response, add_special_tokens=False).input_ids
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    total = sum(float(logp[len(p) + i - 1, t]) for i, t in enumerate(r))
    return total, len(r)


def test_response_logprobs_matches_direct_computation(tiny):
    model, tok = tiny
    prompts = [
        build_prompt(tok, "What is 2+3?"),
        build_prompt(tok, "Betty has 5 apples and buys 7 more. How many?"),
        "short",
        build_prompt(tok, "x"),
    ]
    responses = [
        "2 + 3 = 5. The answer is 5.",
        "5 + 7 = 12.\nThe answer is 12.",
        " and a much longer response " * 3,
        "7",
    ]
    got = response_logprobs(model, tok, prompts, responses, batch_size=3, progress=False)  # padded batches
    for (lp, n), p, r in zip(got, prompts, responses):
        ref_lp, ref_n = _direct(model, tok, p, r)
        assert n == ref_n > 0
        assert lp == pytest.approx(ref_lp, abs=1e-3)
        assert lp < 0
    with pytest.raises(ValueError):
        response_logprobs(model, tok, ["a"], [], progress=False)


def test_head_only_scoring_is_used_and_a_custom_forward_falls_back(tiny):
    """The LM head is applied only where log-probs are read (checked once against the model's own forward); a
    model whose forward does more than decoder + head (here: logits scaled) is detected and scored in full."""
    from yfpo.eval.loglik import _Scorer

    model, tok = tiny
    prompts = [build_prompt(tok, "What is 2+3?"), build_prompt(tok, "Betty has 5 apples. How many?")]
    responses = ["2 + 3 = 5. The answer is 5.", "She has 5.\nThe answer is 5."]
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    sc = _Scorer(model)
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 2])
    got = sc(ids, mask, rows, cols)
    assert sc.fast is True
    full = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[rows, cols].float(), dim=-1)
    assert torch.allclose(got, full, atol=1e-5)

    class Scaled(torch.nn.Module):  # a forward that rescales the logits (like logit_scale / soft-capping)
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config
            self.training = False

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def get_decoder(self):
            return self.inner.get_decoder()

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = out.logits * 0.5
            return out

    scaled = Scaled(model)
    sc2 = _Scorer(scaled)
    got2 = sc2(ids, mask, rows, cols)
    assert sc2.fast is False
    assert torch.allclose(
        got2,
        torch.log_softmax(
            full_logits := model(input_ids=ids, attention_mask=mask).logits[rows, cols].float() * 0.5, dim=-1
        ),
        atol=1e-5,
    )
    del full_logits
    fast = response_logprobs(model, tok, prompts, responses, progress=False)
    slow = response_logprobs(scaled, tok, prompts, responses, progress=False)
    assert all(a[1] == b[1] for a, b in zip(fast, slow)) and fast != slow  # the scaled model is scored as itself


def _count_tokens(model):
    """A hook that counts the token positions the model's embedding sees (returns the counter and the handle)."""
    seen = [0]
    h = model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: seen.__setitem__(0, seen[0] + args[0].numel())
    )
    return seen, h


def test_responses_to_one_prompt_share_a_row_and_score_as_if_alone():
    """Responses to the same prompt are packed behind one copy of it (fewer positions through the model) and
    score what they score one by one; an item too long to pack and a unique prompt get rows of their own. (Larger
    random weights than the default tiny model's, so that a wrong position or mask would move the scores by
    whole nats, not by less than the tolerance.)"""
    model, tok = tiny_model(initializer_range=0.2)
    qs = ["What is 2+3?", "Betty has 5 apples and buys 7 more. How many?", "x", "A train goes 60 km in 2 h."]
    prompts, responses = [], []
    for j, q in enumerate(qs):
        for r in ("The answer is 5.", f"{j} + 1 = {j + 1}.\nThe answer is {j + 1}.", "7"):
            prompts.append(build_prompt(tok, q))
            responses.append(r)
    prompts.append(build_prompt(tok, "only one response"))
    responses.append("It is 3.")
    max_len = max(len(tok(p + r, add_special_tokens=False).input_ids) for p, r in zip(prompts, responses)) + 40
    prompts.append(prompts[0])  # shares prompt 0 but does not fit beside it: cut from the left, on its own row
    p0 = len(tok(prompts[0], add_special_tokens=False).input_ids)
    long = "The answer is"
    while len(tok(long, add_special_tokens=False).input_ids) < max_len - p0 // 2:
        long += " very"
    responses.append(long)
    seen, h = _count_tokens(model)
    try:
        shared = response_logprobs(model, tok, prompts, responses, batch_size=5, max_length=max_len, progress=False)
        n_shared, seen[0] = seen[0], 0
        alone = response_logprobs(
            model, tok, prompts, responses, batch_size=5, max_length=max_len, progress=False, share_prompts=False
        )
        n_alone = seen[0]
    finally:
        h.remove()
    for (a, na), (b, nb), p, r in zip(shared[:-1], alone[:-1], prompts, responses):
        ref, ref_n = _direct(model, tok, p, r)
        assert na == nb == ref_n > 0
        assert a == pytest.approx(ref, abs=1e-3) and b == pytest.approx(ref, abs=1e-3)
    assert shared[-1] == alone[-1] and shared[-1][1] == len(tok(long, add_special_tokens=False).input_ids)
    assert n_shared < 0.8 * n_alone  # each prompt ran once per row, not once per response (plus one check row)


def test_a_model_that_cannot_score_packed_rows_is_scored_without_packing(tiny):
    """The first packed row is checked against its responses scored alone: a model whose forward drops the
    4-D attention mask and position ids (so a packed response would see the other responses) is detected, and
    every item is scored on its own row (right padding needs no mask for the positions that are read)."""
    model, tok = tiny

    class CausalOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def get_output_embeddings(self):
            return None  # no head-only path: every forward goes through forward() below

        def forward(self, input_ids, attention_mask=None, position_ids=None):
            return self.inner(input_ids=input_ids)

    wrapped = CausalOnly(model)
    prompts = [build_prompt(tok, "What is 2+3?")] * 2 + [build_prompt(tok, "How many?")] * 2
    responses = ["The answer is 5.", "2 + 3 = 6. The answer is 6.", "Three.", "The answer is 3."]
    got = response_logprobs(wrapped, tok, prompts, responses, progress=False)
    for (lp, n), p, r in zip(got, prompts, responses):
        ref, ref_n = _direct(model, tok, p, r)
        assert n == ref_n and lp == pytest.approx(ref, abs=1e-3)


def test_response_logprobs_truncates_prompt_from_left(tiny):
    model, tok = tiny
    prompt, resp = build_prompt(tok, "Betty has 5 apples and buys 7 more. How many?"), "The answer is 12."
    n_resp = len(tok(resp, add_special_tokens=False).input_ids)
    L = n_resp + 6
    ((lp, n),) = response_logprobs(model, tok, [prompt], [resp], max_length=L, progress=False)
    p_ids = tok(prompt, add_special_tokens=False).input_ids[-6:]
    ref, ref_n = _direct(model, tok, tok.decode(p_ids), resp)
    assert n == n_resp == ref_n
    # the kept prompt tokens are the last 6 (re-tokenising their decoded text gives the same ids here)
    assert tok(tok.decode(p_ids), add_special_tokens=False).input_ids == p_ids
    assert lp == pytest.approx(ref, abs=1e-3)
    ((lp2, n2),) = response_logprobs(model, tok, [prompt], [resp], max_length=4, progress=False)
    assert n2 == 3  # only the last 3 response tokens have a prefix inside the window


def test_next_token_logprobs_equals_single_token_responses(tiny):
    model, tok = tiny
    ids = letter_token_ids(tok)
    assert ids is not None and len(ids) == 4
    prompts = [build_prompt(tok, q) for q in ("a", "What is 2+3?", "Betty has 5 apples and buys 7 more. How many?")]
    fast = next_token_logprobs(model, tok, prompts, ids, batch_size=2, progress=False)
    slow = response_logprobs(model, tok, [p for p in prompts for _ in "ABCD"], list("ABCD") * 3, progress=False)
    for i in range(3):
        assert fast[i] == pytest.approx([slow[4 * i + j][0] for j in range(4)], abs=1e-4)


def test_discrimination_tiny(tiny, tmp_path):
    model, tok = tiny
    s = run_discrimination(model, tok, limit=3, out_dir=tmp_path, batch_size=2, progress=False)
    assert s["n"] == 3 and 0.0 <= s["accuracy"] <= 1.0 and s["lo"] <= s["accuracy"] <= s["hi"]
    assert s["n_correct"] == round(s["accuracy"] * 3) and s["score"].startswith("mean log-prob")
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(items) == 3 and len({it["id"] for it in items}) == 3  # unique ids, pairable across runs
    assert json.loads((tmp_path / "discrimination.json").read_text())["n"] == 3
    pair = load_solution_pairs(limit=1)[0]
    prompt = build_prompt(tok, pair["question"])
    lc, nc = _direct(model, tok, prompt, pair["chosen"])
    lr, nr = _direct(model, tok, prompt, pair["rejected"])
    it = items[0]
    assert (it["chosen_tokens"], it["rejected_tokens"]) == (nc, nr)
    assert it["chosen_score"] == pytest.approx(lc / nc, abs=1e-4)  # length-normalised: mean per token
    assert it["rejected_score"] == pytest.approx(lr / nr, abs=1e-4)
    assert it["correct"] == (it["chosen_score"] > it["rejected_score"])


def test_discrimination_known_scores(tiny, monkeypatch):
    """Scores are normalised by length before comparing: a longer chosen with a lower sum can still win."""
    model, tok = tiny
    pairs = [
        {"question": "q1", "chosen": "c", "rejected": "r"},
        {"question": "q2", "chosen": "c", "rejected": "r"},
        {"question": "q3", "chosen": "c", "rejected": "r"},
    ]
    # chosen (sum, n) then rejected (sum, n), pair by pair
    fixed = [(-10.0, 10), (-3.0, 1), (-4.0, 2), (-5.0, 2), (-2.0, 1), (-4.0, 2)]

    def fake(model, tok, prompts, responses, **kw):
        return fixed

    monkeypatch.setattr(disc_mod, "response_logprobs", fake)
    s = run_discrimination(model, tok, pairs, progress=False)
    # pair 1: -1.0 vs -5.0 -> right (though its sum is lower); pair 2: -3.0 vs -2.5 -> wrong; pair 3: tie -> wrong
    assert s["n_correct"] == 1 and s["accuracy"] == pytest.approx(1 / 3)


def test_mmlu_tiny(tiny, tmp_path):
    model, tok = tiny
    res = run_mmlu(model, tok, per_subject=1, out_dir=tmp_path, batch_size=16, progress=False)
    test = [json.loads(x) for x in open(mmlu_mod.find_data_file("mmlu/test.jsonl"))]
    redux = [json.loads(x) for x in open(mmlu_mod.find_data_file("mmlu_redux/mmlu_redux.jsonl"))]
    n_subj = len({r["subject"] for r in test if r.get("subcategory") != "math"})
    n_redux = len({r["subject"] for r in redux if r.get("error_type") == "ok"})
    assert res["non_math"]["n"] == n_subj and n_subj > 40
    assert res["redux_ok"]["n"] == n_redux and n_redux > 20
    for part in ("non_math", "redux_ok"):
        a = res[part]
        assert 0.0 <= a["lo"] <= a["acc"] <= a["hi"] <= 1.0
    assert res["protocol"]["per_subject"] == 1
    saved = json.loads((tmp_path / "mmlu.json").read_text())
    assert saved["non_math"] == res["non_math"]
    for part in ("non_math", "redux_ok"):  # per question, for paired tests between models
        items = saved["items"][part]
        assert len(items) == res[part]["n"] and len({it["id"] for it in items}) == len(items)
        assert sum(it["correct"] for it in items) == res[part]["n_correct"]


def test_mmlu_prompt_and_scoring(tiny, monkeypatch):
    model, tok = tiny
    rows = [
        {"subject": "world_religions", "question": "Q1?", "choices": ["a", "b", "c", "d"], "answer": 2},
        {"subject": "law", "question": "Q2?", "choices": ["a", "b", "c", "d"], "answer": 0},
        {"subject": "law", "question": "Q3?", "choices": ["a", "b", "c"], "answer": 1},
    ]
    p = mmlu_prompt(tok, rows[0])
    assert "about world religions" in p and "\nA. a\nB. b\nC. c\nD. d\n" in p and p.endswith("<|im_start|>assistant\n")
    fast = score_rows(model, tok, rows, progress=False)
    monkeypatch.setattr(mmlu_mod, "letter_token_ids", lambda tok: None)  # the multi-token path
    assert score_rows(model, tok, rows, progress=False) == fast
    monkeypatch.setattr(mmlu_mod, "letter_token_ids", lambda tok: [1, 2, 3, 4])
    monkeypatch.setattr(
        mmlu_mod,
        "next_token_logprobs",
        lambda m, t, prompts, ids, **kw: [[-3, -2, -1, -4], [-1, -2, -3, -4], [-2, -1, -3, -0.1]],
    )
    # row 3 has 3 choices: the 4th score is ignored
    assert score_rows(model, tok, rows, progress=False) == [True, True, True]


def test_packed_rows_stop_at_the_pack_limit():
    from yfpo.eval.loglik import _rows

    prompt = [1, 2, 3, 4, 5]
    resp = [[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]]
    rows = _rows([prompt] * 3, resp, max_length=1024, share=True, pack_max=13)
    assert [r.packed for r in rows] == [True, False]  # prompt + 2 responses = 13 tokens; the third gets its own row
    assert rows[0].ids == prompt + resp[0] + resp[1]
    assert rows[1].ids == prompt + resp[2]
    assert sorted(i for r in rows for i, _, _ in r.reads) == [0, 1, 2]
    one = _rows([prompt] * 3, resp, max_length=1024, share=True, pack_max=1024)
    assert len(one) == 1 and len(one[0].reads) == 3  # under the limit, one row holds the prompt once

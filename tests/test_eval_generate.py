"""Batched generation (yfpo.engine.generate) against per-example `model.generate`, and prompt building."""

from __future__ import annotations

import pytest
import torch
from conftest import QUESTIONS

from yfpo.engine.common import eos_ids
from yfpo.engine.generate import generate
from yfpo.engine.prompts import INSTRUCTION, build_prompt, format_gold_response, format_user_message
from yfpo.models.tiny import tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _reference(model, tok, prompt: str, max_new_tokens: int, **kw) -> list[int]:
    """Greedy continuation of one prompt alone (no padding): the ground truth for the batched path."""
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=eos_ids(model, tok),
        **kw,
    )
    return out[0, enc.input_ids.shape[1] :].tolist()


def test_batched_greedy_equals_per_example(tiny):
    model, tok = tiny
    prompts = [build_prompt(tok, q) for q in QUESTIONS]
    lengths = [len(tok(p, add_special_tokens=False).input_ids) for p in prompts]
    assert max(lengths) - min(lengths) > 20  # left padding is really exercised
    side = tok.padding_side
    gens = generate(model, tok, prompts, max_new_tokens=10, batch_size=3, progress=False)
    assert len(gens) == len(prompts)
    for p, g in zip(prompts, gens):
        ref = _reference(model, tok, p, 10)
        assert g.text == tok.decode(ref, skip_special_tokens=True)
        assert g.n_tokens == len(ref) == 10
        assert g.finish == "length" and g.truncated
    # the order of the caller's prompts is kept whatever the batching
    again = generate(model, tok, prompts[::-1], max_new_tokens=10, batch_size=2, progress=False)
    assert [g.text for g in again] == [g.text for g in gens][::-1]
    assert tok.padding_side == side  # generate pads on the left and restores the tokenizer


def test_eos_ends_a_row_and_is_not_in_text():
    model, tok = tiny_model()
    prompts = [build_prompt(tok, q) for q in QUESTIONS[:3]]
    free = [_reference(model, tok, p, 12) for p in prompts]
    stop_tok = free[0][4]  # make the 5th generated token of prompt 0 an end-of-turn token
    k = free[0].index(stop_tok)
    model.generation_config.eos_token_id = [tok.eos_token_id, stop_tok]
    gens = generate(model, tok, prompts, max_new_tokens=12, batch_size=3, progress=False)
    assert gens[0].finish == "eos" and not gens[0].truncated
    assert gens[0].n_tokens == k + 1
    assert gens[0].text == tok.decode(free[0][:k], skip_special_tokens=True)
    for g, row in zip(gens[1:], free[1:]):
        if stop_tok in row:
            j = row.index(stop_tok)
            assert (g.n_tokens, g.finish) == (j + 1, "eos")
            assert g.text == tok.decode(row[:j], skip_special_tokens=True)
        else:
            assert (g.n_tokens, g.finish) == (12, "length")
            assert g.text == tok.decode(row, skip_special_tokens=True)


def _ascii_token_text(tok, row: list[int], start: int) -> str:
    for t in row[start:]:
        s = tok.decode([t])
        if len(s.strip()) >= 2 and s.strip().isascii() and s.strip().isalnum():
            return s.strip()
    raise AssertionError("no plain ASCII token in the tiny model's output to use as a stop string")


def test_stop_strings_cut_output_and_count_tokens(tiny):
    model, tok = tiny
    prompts = [build_prompt(tok, q) for q in QUESTIONS]
    n_new = 16
    free = [_reference(model, tok, p, n_new) for p in prompts]
    stop = _ascii_token_text(tok, free[0], 3)
    gens = generate(
        model, tok, prompts, max_new_tokens=n_new, batch_size=5, stop=[stop, "\u2603never\u2603"], progress=False
    )
    n_stopped = 0
    for g, row in zip(gens, free):
        full = tok.decode(row, skip_special_tokens=True)
        if stop in full:
            n_stopped += 1
            # generation stops at the first token that completes the stop string; the text ends before it
            j = next(j for j in range(1, len(row) + 1) if stop in tok.decode(row[:j], skip_special_tokens=True))
            assert g.finish == "stop" and not g.truncated
            assert g.text == full[: full.find(stop)]
            assert g.n_tokens == j  # padding after an early stop is not counted
        else:
            assert (g.finish, g.n_tokens, g.text) == ("length", n_new, full)
    assert n_stopped >= 1


def test_pad_token_is_restored_and_optional():
    model, tok = tiny_model()
    tok.pad_token = None
    gens = generate(model, tok, [build_prompt(tok, q) for q in QUESTIONS[:2]], max_new_tokens=3, progress=False)
    assert len(gens) == 2 and all(g.n_tokens == 3 for g in gens)
    assert tok.pad_token is None


def test_sampling_is_reproducible(tiny):
    model, tok = tiny
    prompts = [build_prompt(tok, q) for q in QUESTIONS[:2]]
    a = generate(model, tok, prompts, max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=5, progress=False)
    b = generate(model, tok, prompts, max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=5, progress=False)
    assert len(a) == 6 and [g.text for g in a] == [g.text for g in b]
    assert len({g.text for g in a}) > 1


def test_bad_backend_and_empty():
    model, tok = tiny_model()
    with pytest.raises(ValueError):
        generate(model, tok, ["x"], backend="nope")
    assert generate(model, tok, [], progress=False) == []
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            generate(model, tok, ["x"], backend="vllm")


def test_zero_shot_prompt(tiny):
    _, tok = tiny
    p = build_prompt(tok, "  What is 2+3?  ")
    assert p == "<|im_start|>user\nWhat is 2+3?\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n"
    assert format_user_message("Q?") == "Q?\n" + INSTRUCTION
    assert format_gold_response(" a\nb ", "7") == "a\nb\nThe answer is 7."


def test_n_shot_prompt(tiny):
    from yfpo.data.problems import load_benchmark

    _, tok = tiny
    train = load_benchmark("gsm8k_train", limit=2)
    p = build_prompt(tok, "What is 2+3?", shots=2)
    assert p.count("<|im_start|>user\n") == 3 and p.count("<|im_start|>assistant\n") == 3
    first = p.index(train[0].question)
    second = p.index(train[1].question)
    last = p.index("What is 2+3?")
    assert first < p.index(f"The answer is {train[0].answer}.") < second < last
    assert f"The answer is {train[1].answer}.<|im_end|>" in p
    assert "<<" not in p  # calculator annotations are stripped from the gold solutions
    assert p.endswith("What is 2+3?\n" + INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_without_chat_template():
    _, tok = tiny_model()
    tok.chat_template = None
    p = build_prompt(tok, "What is 2+3?", shots=1)
    assert p.startswith("Question: ") and p.endswith("Question: What is 2+3?\n" + INSTRUCTION + "\n\nAnswer:")
    assert p.count("Answer: ") == 1

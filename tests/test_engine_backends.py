"""Engine backends (yfpo.engine.backends): each exact backend gives the HF reference's greedy outputs on a tiny random
model (token for token, including end-of-turn and stop-string handling); a backend that is not installed fails with a
clear message; `auto` falls back to the HF reference."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import QUESTIONS

from yfpo.engine import backends, fast
from yfpo.engine.common import eos_ids
from yfpo.engine.fast import fill_order, pack_batches
from yfpo.engine.generate import generate
from yfpo.engine.prompts import build_prompt
from yfpo.models.tiny import tiny_model

QUESTIONS = [*QUESTIONS, "Tina buys 3 books and 4 more books."]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def _prompts(tok):
    return [build_prompt(tok, q) for q in QUESTIONS]


def test_pack_batches_fills_by_tokens():
    lengths = [10, 50, 20, 40, 30]
    b = pack_batches(lengths, max_new_tokens=10, token_budget=130)
    assert sorted(i for x in b for i in x) == list(range(5))
    assert b[0] == [1, 3]  # longest first: 2 rows x (50 + 10) <= 130, 3 rows would not fit
    for x in b:
        assert len(x) * (max(lengths[i] for i in x) + 10) <= 130 or len(x) == 1
    assert pack_batches([500], 10, 100) == [[0]]  # one row even over the budget
    assert all(len(x) >= 3 for x in pack_batches(lengths, 10, 1, min_rows=3)[:1])


@pytest.mark.parametrize("budget", [None, 150, 400])
def test_fast_greedy_equals_hf(tiny, budget):
    model, tok = tiny
    ps = _prompts(tok) * 2
    ref = generate(model, tok, ps, max_new_tokens=12, batch_size=4, backend="hf", progress=False)
    got = generate(model, tok, ps, max_new_tokens=12, batch_size=1, backend="fast", token_budget=budget, progress=False)
    assert got == ref


def test_fill_order_moves_only_the_last_running_rows():
    assert fill_order([False, True, False, False, True, False]) == [0, 5, 2, 3]
    assert fill_order([True, True, False, False]) == [3, 2]
    assert fill_order([False, False, True]) == [0, 1]
    assert fill_order([True, False]) == [1]


def test_reserved_layer_matches_dynamic_layer():
    """The reserved cache returns what DynamicLayer's concatenation returns, through in-place moves (sorted and
    fill-the-holes orders), the copying fallback (any other order), sample repeats and growth past its capacity."""
    import torch
    from transformers.cache_utils import DynamicLayer

    g = torch.Generator().manual_seed(0)
    ref, res = DynamicLayer(), fast._ReservedLayer(capacity=7)

    def step(length, rows):
        k, v = torch.randn(rows, 2, length, 4, generator=g), torch.randn(rows, 2, length, 3, generator=g)
        a, b = ref.update(k, v), res.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    step(5, 6)
    step(1, 6)
    for order in ([0, 5, 2, 3, 4], [0, 1, 3], [2, 0, 1]):  # fill order, sorted, a shuffle (the copy path)
        idx = torch.tensor(order)
        ref.batch_select_indices(idx)
        res.batch_select_indices(idx)
        step(1, len(order))
    ref.batch_repeat_interleave(2)
    res.batch_repeat_interleave(2)
    for _ in range(4):  # 5 + 1 + 3 + 4 = 13 positions: past the capacity of 7, so the buffer grows
        step(1, 6)
    assert res.get_seq_length() == ref.get_seq_length() == 13


def test_default_token_budget_is_the_kv_bytes_budget(tiny, monkeypatch):
    model, _ = tiny
    c = model.config
    per_position = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 4
    monkeypatch.setattr(fast, "KV_BUDGET_BYTES", per_position * 5000)
    assert fast.default_token_budget(model) == 5000
    monkeypatch.setattr(fast, "MAX_ROWS", 3)
    assert max(len(b) for b in pack_batches([5] * 10, 5, 5000)) == 3  # MAX_ROWS is read at call time


def test_fast_prefill_in_slices_equals_hf(tiny, monkeypatch):
    model, tok = tiny
    ps = _prompts(tok)
    ref = generate(model, tok, ps, max_new_tokens=10, batch_size=6, backend="hf", progress=False)
    monkeypatch.setattr(fast, "PREFILL_POSITIONS", 1)  # one row per prefill pass
    got = generate(model, tok, ps, max_new_tokens=10, batch_size=6, backend="fast", progress=False)
    assert got == ref
    calls = []
    real = fast._prefill
    monkeypatch.setattr(fast, "_prefill", lambda *a: calls.append(a[1].shape[0]) or real(*a))
    assert generate(model, tok, ps, max_new_tokens=10, batch_size=6, backend="fast", progress=False) == ref
    assert calls == [len(ps)]  # one batch of all prompts, prefilled row by row


def test_fast_pauses_the_garbage_collector_only_for_a_batch(tiny, monkeypatch):
    import gc

    model, tok = tiny
    during = []
    real = fast._prefill
    monkeypatch.setattr(fast, "_prefill", lambda *a: during.append(gc.isenabled()) or real(*a))
    assert gc.isenabled()
    generate(model, tok, _prompts(tok)[:2], max_new_tokens=3, backend="fast", progress=False)
    assert during == [False] and gc.isenabled()


def test_shared_prefix_of_a_left_padded_batch():
    import torch

    ids = torch.tensor([[7, 8, 9, 1, 2], [0, 7, 8, 9, 3], [0, 0, 7, 8, 4]])
    mask = (ids != 0).long()
    assert fast.shared_prefix(ids, mask) == 2  # 7 8: the third row keeps its 4
    same = torch.tensor([[0, 5, 6], [5, 6, 6], [0, 5, 6]])
    assert fast.shared_prefix(same, (same != 0).long()) == 1  # every row keeps >= 1 own token
    assert fast.shared_prefix(ids[:1], mask[:1]) == 0
    assert fast.shared_prefix(torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2, dtype=torch.long)) == 0
    holes = torch.tensor([[1, 0, 1], [1, 1, 1]])  # not left padding: no prefix is assumed
    assert fast.shared_prefix(torch.tensor([[7, 8, 9], [7, 8, 9]]), holes) == 0


def test_fast_with_and_without_a_shared_prefix_equals_hf(tiny, monkeypatch):
    """Chat prompts share their template's opening (prefilled once); raw questions share nothing."""
    model, tok = tiny
    seen = []
    real = fast.shared_prefix
    monkeypatch.setattr(fast, "shared_prefix", lambda *a: seen.append(real(*a)) or seen[-1])
    for ps in (_prompts(tok), QUESTIONS):
        ref = generate(model, tok, ps, max_new_tokens=10, batch_size=6, backend="hf", progress=False)
        assert generate(model, tok, ps, max_new_tokens=10, batch_size=6, backend="fast", progress=False) == ref
    assert len(seen) == 2 and seen[0] > 0 and seen[1] == 0


def test_fast_packed_head_used_only_when_exact(tiny, monkeypatch):
    """The LM head runs as a packed-weight GEMM only after its first-step logits equal the model's own: on the tiny
    model it is used where MKL's packed kernel is exact for its shape (and the outputs stay HF's either way); a model
    whose logits are not plain `lm_head(h)` keeps its own."""
    import torch

    model, tok = tiny
    if not torch._C.has_mkl:
        pytest.skip("no MKL in this torch build")
    ps = _prompts(tok) * 2  # 12 rows: exact on the AVX2 EPYC, where 6 was not (the check below holds either way)
    ref = generate(model, tok, ps, max_new_tokens=10, batch_size=12, backend="hf", progress=False)
    monkeypatch.setattr(fast, "PACKED_HEAD_MIN_ROWS", 1)
    monkeypatch.setattr(fast, "PACKED_HEAD_MIN_SHARE", 0.1)  # padded steps too, as rows finish
    ready = []
    real = fast._PackedHead.check
    monkeypatch.setattr(fast._PackedHead, "check", lambda self, lg: real(self, lg) or ready.append(self.ready))
    assert generate(model, tok, ps, max_new_tokens=10, batch_size=12, backend="fast", progress=False) == ref
    # whether the packed kernel is bit-identical depends on the CPU and the shape (on a 2-core AVX2 EPYC it was not
    # at 1-3, 5 and 6 rows of this head, and was at 4, 8 and 12+): a probe of the same shape says which to expect
    probe_head = fast._PackedHead(model, len(ps))
    try:
        probe = torch.randn(len(ps), probe_head.weight.shape[1], generator=torch.Generator().manual_seed(0))
        exact = torch.equal(probe_head(probe), torch.nn.functional.linear(probe, probe_head.weight))
    finally:
        probe_head.close()
    assert ready == [exact]
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: out * 1.5)  # a scaled head
    try:
        scaled = generate(model, tok, ps, max_new_tokens=10, batch_size=12, backend="hf", progress=False)
        ready.clear()
        assert generate(model, tok, ps, max_new_tokens=10, batch_size=12, backend="fast", progress=False) == scaled
        assert ready == [False]
    finally:
        hook.remove()


def test_fast_eos_and_dropped_rows_equal_hf(monkeypatch):
    model, tok = tiny_model()
    ps = _prompts(tok)
    free = generate(model, tok, ps, max_new_tokens=14, backend="hf", progress=False)
    row0 = tok(free[0].text, add_special_tokens=False).input_ids
    model.generation_config.eos_token_id = [tok.eos_token_id, row0[3]]  # some rows now end early, others run on
    ref = generate(model, tok, ps, max_new_tokens=14, batch_size=6, backend="hf", progress=False)
    got = generate(model, tok, ps, max_new_tokens=14, batch_size=6, backend="fast", progress=False)
    assert {g.finish for g in ref} >= {"eos"}
    assert got == ref
    monkeypatch.setattr(fast, "PACKED_HEAD_MIN_ROWS", 1)  # the packed head, padded as rows leave
    monkeypatch.setattr(fast, "PACKED_HEAD_MIN_SHARE", 0.1)
    assert generate(model, tok, ps, max_new_tokens=14, batch_size=6, backend="fast", progress=False) == ref


def test_fast_stop_strings_equal_hf(tiny):
    model, tok = tiny
    ps = _prompts(tok)
    free = generate(model, tok, ps, max_new_tokens=16, backend="hf", progress=False)
    pieces = [tok.decode([t]).strip() for t in tok(free[0].text, add_special_tokens=False).input_ids[2:]]
    word = next((w for w in pieces if len(w) >= 2 and w.isascii() and w.isalnum()), None)
    assert word is not None, "no plain ASCII word in the tiny model's output to use as a stop string"
    stop = [word, "\u2603never\u2603"]
    ref = generate(model, tok, ps, max_new_tokens=16, batch_size=6, stop=stop, backend="hf", progress=False)
    got = generate(model, tok, ps, max_new_tokens=16, batch_size=2, stop=stop, backend="fast", progress=False)
    assert any(g.finish == "stop" for g in ref)
    assert got == ref


def test_fast_sampling_reproducible_and_shared_prefill(tiny):
    model, tok = tiny
    ps = _prompts(tok)[:3]
    a = generate(
        model, tok, ps, max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=5, backend="fast", progress=False
    )
    b = generate(
        model, tok, ps, max_new_tokens=6, do_sample=True, num_return_sequences=3, seed=5, backend="fast", progress=False
    )
    assert len(a) == 9 and a == b
    assert len({g.text for g in a}) > 1
    greedy = generate(model, tok, ps, max_new_tokens=6, num_return_sequences=2, backend="fast", progress=False)
    ref = generate(model, tok, ps, max_new_tokens=6, backend="hf", progress=False)  # HF: greedy n > 1 is an error
    assert greedy == [g for g in ref for _ in range(2)]


def test_auto_is_fast_and_falls_back_to_hf(tiny, monkeypatch):
    model, _ = tiny
    if backends._vllm_missing(model) is not None:
        assert backends.resolve("auto", model).name == "fast"
    monkeypatch.setattr(backends, "_fast_missing", lambda m: "not here")
    monkeypatch.setattr(backends, "_vllm_missing", lambda m: "no GPU")
    assert backends.resolve("auto", model).name == "hf"
    with pytest.raises(RuntimeError, match="backend 'fast' cannot run here: not here"):
        backends.resolve("fast", model)


def test_auto_resolution_is_pinned_per_folder_and_recorded_by_eval(tiny, tmp_path, monkeypatch):
    """Work started with one backend is never continued with another: `auto` resolving to another backend on a
    resume (another machine or install) is refused for pairs (backends.pin) and eval (protocol.json)."""
    from yfpo.eval.bench import run_eval

    model, tok = tiny
    assert backends.pin(tmp_path / "p", "auto", model) == "fast"
    assert backends.pin(tmp_path / "p", "fast", model) == "fast"
    monkeypatch.setattr(backends, "_fast_missing", lambda m: "not here")
    with pytest.raises(
        ValueError, match="was generated with backend 'fast' \\(requested 'auto'\\); here 'auto' runs 'hf'"
    ):
        backends.pin(tmp_path / "p", "auto", model)
    monkeypatch.undo()

    kw = dict(tokenizer=tok, max_new_tokens=4, out_dir=tmp_path / "e", progress=False, backend="auto")
    s = run_eval(model, "gsm8k", limit=1, **kw)
    assert s["protocol"]["backend"] == {"requested": "auto", "used": "fast", "exact": True, "quantized": False}
    monkeypatch.setattr(backends, "_fast_missing", lambda m: "not here")
    with pytest.raises(ValueError, match="holds items from another protocol \\(backend"):
        run_eval(model, "gsm8k", limit=2, **kw)


def test_missing_package_gives_a_clear_error(tiny, monkeypatch):
    model, tok = tiny
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("llama_cpp", "ctranslate2", "vllm") else real(name, *a),
    )
    for name, pkg in (
        ("llamacpp", "llama-cpp-python"),
        ("ct2", "ctranslate2"),
        ("ct2-int8", "ctranslate2"),
        ("vllm", "vllm"),
    ):
        with pytest.raises(RuntimeError, match=f"backend '{name}' cannot run here: the {pkg} package is not installed"):
            generate(model, tok, ["x"], backend=name, progress=False)
    with pytest.raises(ValueError, match="expected one of auto, hf, fast"):
        generate(model, tok, ["x"], backend="nope")


def test_ct2_greedy_equals_hf(tmp_path, tiny):
    import ctranslate2  # noqa: F401  (a test dependency: missing, this fails instead of skipping)
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype="float32")
    m.generation_config.eos_token_id = eos_ids(model, tok)
    ps = _prompts(tok)
    ref = generate(m, tok, ps, max_new_tokens=10, backend="hf", progress=False)
    got = generate(m, tok, ps, max_new_tokens=10, backend="ct2", progress=False)
    assert got == ref

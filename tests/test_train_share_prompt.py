"""share_prompt: the DPO policy forward runs each pair's prompt once (chosen and rejected packed behind it) and gives
the loss, the gradients and the neuron margin of TRL's two rows per pair, up to float rounding; where it cannot
be exact it is not used."""

from __future__ import annotations

import pytest
import torch
from test_train_common import (
    cfg_for,
    enable_gc,
    first_batch,
    loss_and_grads,
    make_yfpo,
    pair_rows,
    write_jsonl,
    write_neuronset,
)

import yfpo.train.share_prompt as share_prompt_mod
from yfpo.models.packing import pack_pairs
from yfpo.models.tiny import tiny_model

# larger random weights than the tiny default, so a wrong position or mask moves losses and gradients visibly
SHARP = {"initializer_range": 0.2}


def _twins(tmp_path, **kw):
    """The same trainer twice, share_prompt on and off (same model weights, same perturbation, same data)."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    if kw.get("gamma"):
        model, _ = tiny_model("llama", seed=0, **SHARP)
        write_neuronset(tmp_path / "neurons.json", model, k_per_layer=6)
        kw.setdefault("neurons", str(tmp_path / "neurons.json"))
    on = make_yfpo(cfg_for(tmp_path / "on", pairs, share_prompt=True, **kw), **SHARP)
    off = make_yfpo(cfg_for(tmp_path / "off", pairs, share_prompt=False, **kw), **SHARP)
    return on, off


def _positions(trainer, batch) -> tuple[float, dict, int]:
    """loss_and_grads, plus the number of token positions the embedding saw."""
    seen = [0]
    emb = trainer.model.get_input_embeddings()
    h = emb.register_forward_hook(lambda m, a, o: seen.__setitem__(0, seen[0] + a[0].numel()))
    try:
        loss, grads = loss_and_grads(trainer, batch)
    finally:
        h.remove()
    return loss, grads, seen[0]


def _close(on, off, rel: float = 2e-6):
    (l1, g1), (l0, g0) = on, off
    assert l1 == pytest.approx(l0, rel=1e-5, abs=1e-6)
    scale = max(g.abs().max().item() for g in g0.values())
    assert scale > 0
    for n in g0:  # float rounding only: an error in the packing moves these by orders of magnitude more
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=rel * scale, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize(
    "kw",
    [
        {"lora": False},
        {"lora": True, "gamma": 1.0},
        {"lora": False, "fdt": True, "gamma": 1.0},
        {"lora": False, "loss_type": "ipo"},
    ],
    ids=["full", "lora-neuron", "fdt-neuron", "ipo"],
)
def test_packed_policy_forward_gives_the_two_row_loss_and_gradients(tmp_path, kw):
    on, off = _twins(tmp_path, **kw)
    batch = first_batch(on)
    _close(loss_and_grads(on, batch), loss_and_grads(off, batch))  # the first packed batch (checked first)
    before = on.share_prompt_batches
    l1, g1, n1 = _positions(on, batch)
    l0, g0, n0 = _positions(off, batch)
    assert on.share_prompt_batches == before + 2 and off.share_prompt_batches == 0  # policy and reference forward
    two_b, L = batch["input_ids"].shape
    packed = pack_pairs(batch["input_ids"], batch["attention_mask"], batch["completion_mask"], torch.float32)
    k = 1 if on.ref_model is not None else 2  # the embedding counted: the policy's (with LoRA also the reference's)
    assert n0 - n1 == k * (two_b * L - packed.input_ids.numel()) > 0  # B packed rows ran, not 2B
    _close((l1, g1), (l0, g0))
    if kw.get("gamma"):
        for key in ("neuron/margin", "neuron/chosen", "neuron/rejected"):
            assert on._metrics["train"][key][-1] == pytest.approx(off._metrics["train"][key][-1], rel=1e-4, abs=1e-6)


def test_the_reference_pass_runs_packed_and_gives_the_two_row_reference(tmp_path):
    """precompute_ref: the one reference pass (log-probs and m_ref) also runs each prompt once, with the same
    values; and the per-step reference forward of a LoRA model (adapters off) does too."""
    on, off = _twins(tmp_path, lora=True, gamma=1.0, precompute_ref=True)
    assert on.share_prompt_batches >= 1  # the reference pass (and the calibration forwards) ran packed
    a, b = on.train_dataset, off.train_dataset  # the reference columns the pass wrote (what training reads)
    for k in ("ref_chosen_logps", "ref_rejected_logps"):
        torch.testing.assert_close(torch.tensor(a[k]), torch.tensor(b[k]), rtol=1e-5, atol=1e-4)
    m_a, m_b = torch.tensor(a["ref_neuron_margin"]), torch.tensor(b["ref_neuron_margin"])
    torch.testing.assert_close(m_a, m_b, rtol=1e-4, atol=1e-5)
    (tmp_path / "live").mkdir()
    on2, off2 = _twins(tmp_path / "live", lora=True, gamma=1.0, variant="yoked_ref")
    batch = first_batch(on2)
    n = on2.share_prompt_batches
    _close(loss_and_grads(on2, batch), loss_and_grads(off2, batch))
    assert on2.share_prompt_batches == n + 2  # policy forward and reference forward (live m_ref), both packed
    for key in ("neuron/margin", "neuron/margin_vs_ref"):
        assert on2._metrics["train"][key][-1] == pytest.approx(off2._metrics["train"][key][-1], rel=1e-4, abs=1e-6)


def test_packing_with_gradient_checkpointing_and_the_neuron_reward(tmp_path):
    """Activation checkpointing recomputes each layer in backward: the captured activations are read in the
    batch's layout after the forward, so the recomputation saves what the forward saved."""
    on, off = _twins(tmp_path, lora=False, gamma=1.0, gradient_checkpointing=True)
    for t in (on, off):
        enable_gc(t)
    batch = first_batch(on)
    _close(loss_and_grads(on, batch), loss_and_grads(off, batch))
    assert on.share_prompt_batches >= 1


def test_a_backbone_that_mishandles_packed_rows_is_detected_and_trains_unpacked(tmp_path, monkeypatch):
    """The first packed batch is checked on one pair: a packed forward that differs from the plain one (here:
    position ids that do not restart for the rejected response) switches packing off before any step uses it."""
    from yfpo.models import packing

    real = packing.pack_pairs

    def wrong_positions(*a, **k):
        p = real(*a, **k)
        if p is not None:
            p.position_ids = torch.arange(p.position_ids.shape[1]).expand_as(p.position_ids).contiguous()
        return p

    monkeypatch.setattr(share_prompt_mod, "pack_pairs", wrong_positions)
    on, off = _twins(tmp_path, lora=False)
    batch = first_batch(on)
    got, want = loss_and_grads(on, batch), loss_and_grads(off, batch)
    assert on.share_prompt_batches == 0 and on.sharing.checked and not any(on.sharing.checked.values())
    assert got[0] == want[0]
    for n in want[1]:
        assert torch.equal(got[1][n], want[1][n]), n


def test_pack_pairs_layout_and_refusals():
    """Rows 0..B-1 chosen, B..2B-1 rejected (TRL's layout); packed row b = prompt + chosen + rejected completion,
    whose positions restart after the prompt. Pairs whose rows do not share the prompt are not packed."""
    #            prompt   | completion      | pad
    ids = torch.tensor(
        [
            [1, 2, 3, 10, 11, 0, 0],  # chosen of pair 0
            [4, 5, 20, 21, 22, 23, 0],  # chosen of pair 1
            [1, 2, 3, 12, 0, 0, 0],  # rejected of pair 0
            [4, 5, 24, 0, 0, 0, 0],  # rejected of pair 1
        ]
    )
    att = (torch.arange(7) < torch.tensor([5, 6, 4, 3]).unsqueeze(1)).long()
    comp = att.clone()
    comp[0, :3] = comp[2, :3] = 0
    comp[1, :2] = comp[3, :2] = 0
    p = pack_pairs(ids, att, comp, torch.float32)
    assert p.input_ids.tolist() == [[1, 2, 3, 10, 11, 12, 0], [4, 5, 20, 21, 22, 23, 24]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0], [0, 1, 2, 3, 4, 5, 2]]
    assert p.saved_positions == 5
    h = torch.randn(2, 7, 3)
    back = p.unpack(h)
    for r in range(4):
        n = int(att[r].sum())
        for t in range(n):  # every real position of every original row maps to the packed token it holds
            b, c = int(p.src_row[r, t]), int(p.src_col[r, t])
            assert p.input_ids[b, c] == ids[r, t] and torch.equal(back[r, t], h[b, c])
    m = p.attention_mask[0, 0] == 0  # visible
    assert m[5, :3].all() and not m[5, 3:5].any() and m[5, 5]  # rejected sees the prompt and itself, not chosen
    assert m[4, :5].all() and not m[4, 5:].any()
    bad = ids.clone()
    bad[2, 0] = 9  # pair 0's rejected row starts with another prompt (e.g. keep_end truncation)
    assert pack_pairs(bad, att, comp, torch.float32) is None
    assert pack_pairs(ids[:3], att[:3], comp[:3], torch.float32) is None  # not 2B rows

"""gamma = 0 and FDT off: YFPOTrainer's loss and every parameter gradient equal plain trl.DPOTrainer's on the
same batch, for many TRL loss types, with full fine-tuning (reference copy) and with LoRA (adapters disabled).
Run with share_prompt off (TRL's two rows per pair), so the comparison is exact to 1e-6; the packed forward is
checked against the two-row one in test_train_share_prompt.py."""

from __future__ import annotations

import copy

import pytest
import torch
from test_train_common import (
    assert_grads_close,
    cfg_for,
    first_batch,
    loss_and_grads,
    make_yfpo,
    pair_rows,
    perturb_,
    spy,
    trainable,
    write_jsonl,
)
from trl import DPOTrainer

from yfpo.models.tiny import tiny_model

# (loss_type, label_smoothing): exo_pair needs 0 < eps; robust is checked with label smoothing
LOSSES = [
    ("sigmoid", 0.0),
    ("ipo", 0.0),
    ("hinge", 0.0),
    ("robust", 0.1),
    ("exo_pair", 0.1),
    ("nca_pair", 0.0),
    ("bco_pair", 0.0),
    ("sppo_hard", 0.0),
    ("apo_zero", 0.0),
    ("apo_down", 0.0),
    ("discopop", 0.0),
    ("sigmoid_norm", 0.0),
    ("sft", 0.0),
]


def _trl_twin(yt, lora: bool):
    """A plain trl.DPOTrainer on an identical tiny model, same args, same data, same trainable weights."""
    from peft import LoraConfig

    model, tok = tiny_model("llama", seed=0)
    ref = None
    peft_config = None
    if lora:
        c = yt.ycfg
        peft_config = LoraConfig(
            r=c.lora_r,
            lora_alpha=c.lora_alpha,
            lora_dropout=c.lora_dropout,
            target_modules=list(c.lora_targets),
            task_type="CAUSAL_LM",
        )
    else:
        ref = copy.deepcopy(model).eval()
    torch.manual_seed(1234)
    from yfpo.train.trainer import build_dataset

    ds, _ = build_dataset(yt.ycfg, tok)
    tt = DPOTrainer(
        model=model,
        ref_model=ref,
        args=copy.deepcopy(yt.args),
        train_dataset=ds,
        processing_class=tok,
        peft_config=peft_config,
    )
    perturb_([p for _, p in trainable(tt.model)], seed=99)
    # same starting point, parameter by parameter
    ours = dict(trainable(yt.model))
    theirs = dict(trainable(tt.model))
    assert set(ours) == set(theirs)
    for n, p in theirs.items():
        assert torch.equal(p, ours[n]), n
    return tt


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gamma0_equals_trl(tmp_path, lora):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    yt = make_yfpo(cfg_for(tmp_path, pairs, lora=lora, batch_size=2, share_prompt=False))
    tt = _trl_twin(yt, lora)
    batch = first_batch(yt)
    assert batch["completion_mask"].sum(1).unique().numel() > 1  # unequal completion lengths
    n_checked = 0
    own = spy(yt, "_loss")  # yfpo's own loss step (TRL's fallback never calls it)
    for loss_type, ls in LOSSES:
        for t in (yt, tt):
            t.loss_types = [loss_type]
            t.label_smoothing = ls
        calls = len(own)
        l_y, g_y = loss_and_grads(yt, batch)
        assert len(own) == calls + 1, "yfpo's own loss path did not run (TRL fallback taken?)"
        l_t, g_t = loss_and_grads(tt, batch)
        assert abs(l_y - l_t) <= 1e-6 * max(1.0, abs(l_t)), (loss_type, l_y, l_t)
        assert any(g.abs().max() > 0 for g in g_t.values()), loss_type
        assert_grads_close(g_y, g_t, rtol=1e-6, atol=1e-6)
        n_checked += 1
    assert n_checked == len(LOSSES)
    # the reward metrics carry TRL's names and values
    for key in ("rewards/chosen", "rewards/margins", "logps/chosen", "rewards/accuracies"):
        assert yt._metrics["train"][key][-1] == pytest.approx(tt._metrics["train"][key][-1], abs=1e-6)


def test_gamma0_equals_trl_with_gradient_checkpointing(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    yt = make_yfpo(cfg_for(tmp_path, pairs, lora=False, gradient_checkpointing=True, share_prompt=False))
    tt = _trl_twin(yt, lora=False)
    batch = first_batch(yt)
    own = spy(yt, "_loss")
    l_y, g_y = loss_and_grads(yt, batch)
    assert len(own) == 1, "yfpo's own loss path did not run"
    l_t, g_t = loss_and_grads(tt, batch)
    assert l_y == pytest.approx(l_t, abs=1e-6)
    assert_grads_close(g_y, g_t, rtol=1e-6, atol=1e-6)

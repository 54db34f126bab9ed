"""RPO (TRL's loss_type [sigmoid, sft] with loss_weights): combined_loss against a direct computation on small
tensors, the neuron term on the preference part only, and YFPOTrainer's loss and gradients against TRL's own
multi-loss DPOTrainer at gamma = 0."""

from __future__ import annotations

import pytest
import torch
from test_train_common import (
    assert_grads_close,
    cfg_for,
    first_batch,
    loss_and_grads,
    make_yfpo,
    pair_rows,
    spy,
    write_jsonl,
)
from test_train_trl_equivalence import _trl_twin

from yfpo.config import from_dict
from yfpo.train.config import TrainConfig
from yfpo.train.losses import combined_loss, preference_type


def test_rpo_equals_direct_computation_and_the_neuron_term_skips_the_nll():
    c = torch.tensor([0.3, -1.2, 2.0])
    r = torch.tensor([-0.4, 0.1, 1.5])
    clen, rlen = torch.tensor([4.0, 7.0, 2.0]), torch.tensor([5.0, 3.0, 6.0])
    nll = torch.tensor(1.7)  # mean NLL of the chosen tokens
    m = torch.tensor([0.5, -0.25, 1.0])
    beta, gamma, w = 0.1, 2.0, (1.0, 0.6)
    kw = dict(chosen_len=clen, rejected_len=rlen, sft_loss=nll)
    got = combined_loss(["sigmoid", "sft"], list(w), c, r, beta, **kw)
    want = w[0] * (-torch.log(torch.sigmoid(beta * (c - r)))).mean() + w[1] * 1.7
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got_n = combined_loss(["sigmoid", "sft"], list(w), c, r, beta, neuron=gamma * m, **kw)
    want_n = w[0] * (-torch.log(torch.sigmoid(beta * (c - r) + gamma * m))).mean() + w[1] * 1.7
    assert got_n.item() == pytest.approx(want_n.item(), rel=1e-6)
    # the sft part is untouched by the neuron term: the difference equals the preference part's difference alone
    pref = combined_loss(["sigmoid"], [w[0]], c, r, beta, **kw)
    pref_n = combined_loss(["sigmoid"], [w[0]], c, r, beta, neuron=gamma * m, **kw)
    assert (got_n - got).item() == pytest.approx((pref_n - pref).item(), rel=1e-6)
    # per-token types read length-normalised ratios; default weights are 1 each
    got_i = combined_loss(["ipo", "sft"], None, c, r, beta, **kw)
    want_i = ((c / clen - r / rlen - 1 / (2 * beta)) ** 2).mean() + 1.7
    assert got_i.item() == pytest.approx(want_i.item(), rel=1e-6)
    with pytest.raises(ValueError, match="2 loss types .* but 1 loss weights"):
        combined_loss(["sigmoid", "sft"], [1.0], c, r, beta, **kw)
    assert preference_type(["sft", "ipo"]) == "ipo" and preference_type(["sft"]) is None


def test_config_loss_type_lists():
    base = dict(pairs="p.jsonl", device="cpu")
    assert from_dict(TrainConfig, base).loss_types() == ["sigmoid"]
    assert from_dict(TrainConfig, dict(loss_type="sigmoid,sft", **base)).validate().loss_types() == ["sigmoid", "sft"]
    cfg = from_dict(TrainConfig, dict(loss_type=["sigmoid", "sft"], trl={"loss_weights": [1.0, 0.5]}, **base))
    assert cfg.validate().loss_types() == ["sigmoid", "sft"]
    with pytest.raises(ValueError, match="`loss_weights` must have the same length as `loss_type`"):  # TRL's check
        from_dict(TrainConfig, dict(loss_type=["sigmoid", "sft"], trl={"loss_weights": [1.0]}, **base))
    with pytest.raises(ValueError, match="'sigmod' is not supported"):
        from_dict(TrainConfig, dict(loss_type=["sigmod", "sft"], **base)).validate()
    with pytest.raises(ValueError, match="listed twice"):
        from_dict(TrainConfig, dict(loss_type=["sft", "sft"], **base)).validate()


@pytest.mark.parametrize("types,weights", [(["sigmoid", "sft"], [1.0, 1.0]), (["ipo", "sft"], [1.0, 0.5])])
def test_trainer_rpo_equals_trl(tmp_path, types, weights):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    yt = make_yfpo(cfg_for(tmp_path, pairs, lora=True, batch_size=2, share_prompt=False))
    tt = _trl_twin(yt, lora=True)
    batch = first_batch(yt)
    for t in (yt, tt):
        t.loss_types, t.loss_weights = list(types), list(weights)
    own = spy(yt, "_loss")  # yfpo's own loss step (TRL's fallback never calls it)
    l_y, g_y = loss_and_grads(yt, batch)
    assert len(own) == 1, "yfpo's own loss path did not run (TRL fallback taken?)"
    l_t, g_t = loss_and_grads(tt, batch)
    assert abs(l_y - l_t) <= 1e-6 * max(1.0, abs(l_t)), (l_y, l_t)
    assert_grads_close(g_y, g_t, rtol=1e-6, atol=1e-6)

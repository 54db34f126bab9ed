"""The YFPO neuron margin and its gradient equal a direct autograd computation of SPEC section 3's formula.

Ground truth: `manual_forward` runs each unpadded sequence through the model piece by piece (its own causal
mask, rotary embeddings and MLP product act(gate(y)) * up(y)), with no hooks and no batching, and the loss is
built from SPEC's formula:
    phi = mean over neurons of s * mean over response tokens of (u - mu) / sigma,  m = phi_w - phi_l
    yoked:     -log sigmoid(beta * (logratio_w - logratio_l) + gamma * m)
    yoked_ref: same with m - m_ref (m_ref from the reference model's activations, no gradient)
    aux:       -log sigmoid(beta * (logratio_w - logratio_l)) + lambda * (-log sigmoid(gamma * m))
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_train_common import (
    cfg_for,
    direct_logp_phi,
    enable_gc,
    first_batch,
    left_pad,
    loss_and_grads,
    make_yfpo,
    pair_rows,
    reference_ctx,
    trainable,
    write_jsonl,
    write_neuronset,
)

from yfpo.models.tiny import tiny_model
from yfpo.neurons.neuronset import NeuronSet

GAMMA, BETA, LAM = 2.0, 0.1, 0.7


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("nr")
    pairs = write_jsonl(d / "pairs.jsonl", pair_rows(4))
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(d / "neurons.json", model, k_per_layer=6)
    return d, pairs, d / "neurons.json"


def direct_loss(tr, batch, ns, variant: str, gamma: float = GAMMA):
    """SPEC's loss, its margin m and m_ref, by direct autograd on the policy's trainable parameters."""
    logp, phi = direct_logp_phi(tr.model, batch, ns)
    ref_mod, ctx = reference_ctx(tr)
    with torch.no_grad(), ctx:
        ref_logp, ref_phi = direct_logp_phi(ref_mod, batch, ns)
    lr = logp - ref_logp
    lr_w, lr_l = lr.chunk(2)
    phi_w, phi_l = phi.chunk(2)
    m = phi_w - phi_l
    rw, rl = ref_phi.chunk(2)
    m_ref = rw - rl
    if variant == "yoked":
        loss = -F.logsigmoid(BETA * (lr_w - lr_l) + gamma * m).mean()
    elif variant == "yoked_ref":
        loss = -F.logsigmoid(BETA * (lr_w - lr_l) + gamma * (m - m_ref)).mean()
    else:
        loss = -F.logsigmoid(BETA * (lr_w - lr_l)).mean() + LAM * (-F.logsigmoid(gamma * m)).mean()
    return loss, m, m_ref, phi


def _check(tr, batch, ns, variant):
    l_tr, g_tr = loss_and_grads(tr, batch)
    tr.model.zero_grad(set_to_none=True)
    loss, m, m_ref, phi = direct_loss(tr, batch, ns, variant)
    loss.backward()
    g_dir = {n: p.grad.detach().clone() for n, p in trainable(tr.model)}
    tr.model.zero_grad(set_to_none=True)
    # the margin is logged as computed, and it is the policy's, not the reference's
    logged = tr._metrics["train"]["neuron/margin"][-1]
    assert logged == pytest.approx(float(m.mean()), abs=1e-5)
    assert abs(float(m.mean()) - float(m_ref.mean())) > 1e-3, "policy and reference margins should differ here"
    assert tr._metrics["train"]["neuron/chosen"][-1] == pytest.approx(float(phi.chunk(2)[0].mean()), abs=1e-5)
    assert l_tr == pytest.approx(float(loss), rel=1e-5, abs=1e-6)
    # the margin moves the loss (so a wrong margin could not pass): compare with the same loss at gamma 0
    if variant != "yoked_ref":  # (yoked_ref: the logged m - m_ref is checked against the direct one instead)
        loss0, _, _, _ = direct_loss(tr, batch, ns, variant, gamma=0.0)
        assert abs(float(loss) - float(loss0)) > 1e-3
    else:
        logged_vs_ref = tr._metrics["train"]["neuron/margin_vs_ref"][-1]
        assert logged_vs_ref == pytest.approx(float((m - m_ref).mean()), abs=1e-5)
        assert abs(logged_vs_ref - float(m.mean())) > 1e-3  # m_ref was not ignored
    scale = max(float(g.abs().max()) for g in g_dir.values())
    assert scale > 0
    for n in g_dir:
        torch.testing.assert_close(g_tr[n], g_dir[n], rtol=1e-4, atol=1e-5 * scale, msg=lambda s, n=n: f"{n}: {s}")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("variant", ["yoked", "yoked_ref", "aux"])
def test_margin_and_gradient_match_formula(files, tmp_path, lora, variant):
    d, pairs, npath = files
    tr = make_yfpo(
        cfg_for(
            tmp_path,
            pairs,
            lora=lora,
            gamma=GAMMA,
            beta=BETA,
            lam=LAM,
            variant=variant,
            neurons=str(npath),
            neuron_norm="raw",
        )
    )
    ns = NeuronSet.load(npath)
    batch = first_batch(tr)
    assert batch["attention_mask"].min() == 0  # right padding present
    _check(tr, batch, ns, variant)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_does_not_double_count(files, tmp_path, lora):
    d, pairs, npath = files
    tr = make_yfpo(
        cfg_for(
            tmp_path,
            pairs,
            lora=lora,
            gamma=GAMMA,
            beta=BETA,
            neurons=str(npath),
            neuron_norm="raw",
            gradient_checkpointing=True,
        )
    )
    enable_gc(tr)
    ns = NeuronSet.load(npath)
    batch = first_batch(tr)
    _check(tr, batch, ns, "yoked")
    # a second step on the same trainer is identical (no activations left over from a recomputation)
    l1, g1 = loss_and_grads(tr, batch)
    l2, g2 = loss_and_grads(tr, batch)
    assert l1 == l2
    assert all(torch.equal(g1[n], g2[n]) for n in g1)


def test_left_padding(files, tmp_path):
    d, pairs, npath = files
    tr = make_yfpo(cfg_for(tmp_path, pairs, lora=False, gamma=GAMMA, beta=BETA, neurons=str(npath), neuron_norm="raw"))
    ns = NeuronSet.load(npath)
    batch = left_pad(first_batch(tr), tr.processing_class.pad_token_id)
    assert batch["attention_mask"][:, 0].min() == 0  # left padding present
    _check(tr, batch, ns, "yoked")


def test_yoked_ref_full_finetuning_uses_reference_copy(files, tmp_path):
    """With a reference copy, m_ref comes from the copy's own hooks; it changes when only the reference changes."""
    d, pairs, npath = files
    tr = make_yfpo(
        cfg_for(tmp_path, pairs, lora=False, gamma=GAMMA, variant="yoked_ref", neurons=str(npath), neuron_norm="raw")
    )
    batch = first_batch(tr)
    tr.model.train()
    with torch.no_grad():
        a = float(tr.compute_loss(tr.model, batch))
        for p in tr.ref_model.parameters():
            p.mul_(1.01)
        b = float(tr.compute_loss(tr.model, batch))
    assert a != b


def test_gamma_needs_neurons_and_logs_keys(files, tmp_path):
    d, pairs, npath = files
    with pytest.raises(ValueError, match="NeuronSet"):
        make_yfpo(cfg_for(tmp_path, pairs, gamma=1.0))
    tr = make_yfpo(cfg_for(tmp_path, pairs, gamma=GAMMA, neurons=str(npath), neuron_norm="raw"))
    loss_and_grads(tr, first_batch(tr))
    for k in (
        "neuron/chosen",
        "neuron/rejected",
        "neuron/margin",
        "neuron/accuracy",
        "rewards/margins",
        "logps/chosen",
    ):
        assert k in tr._metrics["train"], k

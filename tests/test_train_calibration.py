"""The calibrated neuron reward (neuron_norm ref_std, neuron_center, gamma_mode grad_ratio), the per-loss placement
of gamma*m, and the reference file: each against a direct computation (test_train_common.direct_logp_phi)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from test_train_common import (
    cfg_for,
    direct_logp_phi,
    first_batch,
    loss_and_grads,
    make_yfpo,
    pair_rows,
    reference_ctx,
    trainable,
    write_jsonl,
    write_neuronset,
)
from torch.utils.data import DataLoader

from yfpo.config import from_dict
from yfpo.models.tiny import tiny_model
from yfpo.neurons.neuronset import NeuronSet
from yfpo.train.config import TrainConfig
from yfpo.train.losses import pairwise_loss

GAMMA, BETA = 2.0, 0.1


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    pairs = write_jsonl(d / "pairs.jsonl", pair_rows(6))
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(d / "neurons.json", model, k_per_layer=6)
    return d, pairs, d / "neurons.json"


def direct_m_ref(tr, ns) -> torch.Tensor:
    """m_ref per training pair, dataset order, by the hook-free forward of the reference."""
    ds = tr.train_dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    mod, ctx = reference_ctx(tr)
    out = []
    with torch.no_grad(), ctx:
        for batch in DataLoader(ds, batch_size=2, collate_fn=tr.data_collator, shuffle=False):
            _, phi = direct_logp_phi(mod, batch, ns)
            w, l = phi.chunk(2)
            out.append(w - l)
    return torch.cat(out)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_calibration_constant_is_std_of_m_ref(files, tmp_path, lora):
    d, pairs, npath = files
    tr = make_yfpo(cfg_for(tmp_path, pairs, lora=lora, gamma=GAMMA, neurons=str(npath)))
    ns = NeuronSet.load(npath)
    want = direct_m_ref(tr, ns).double()
    cal = tr.calibration
    assert cal["n_pairs"] == 6
    torch.testing.assert_close(torch.tensor(cal["m_ref"], dtype=torch.float64), want, rtol=1e-4, atol=1e-6)
    assert cal["std"] == pytest.approx(float(want.std()), rel=1e-4)
    assert cal["mean"] == pytest.approx(float(want.mean()), rel=1e-4, abs=1e-7)
    assert cal["mean_over_std"] == pytest.approx(cal["mean"] / cal["std"])
    on_disk = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert on_disk["std"] == cal["std"] and on_disk["m_ref"] == cal["m_ref"]


@pytest.mark.parametrize("variant,center", [("yoked", False), ("yoked", True), ("yoked_ref", False), ("aux", False)])
def test_loss_uses_normalised_margin_exactly(files, tmp_path, variant, center):
    d, pairs, npath = files
    tr = make_yfpo(
        cfg_for(
            tmp_path,
            pairs,
            lora=False,
            gamma=GAMMA,
            beta=BETA,
            lam=0.7,
            variant=variant,
            neuron_center=center,
            neurons=str(npath),
        )
    )
    ns = NeuronSet.load(npath)
    std, mean = tr.calibration["std"], tr.calibration["mean"]
    batch = first_batch(tr)
    l_tr, g_tr = loss_and_grads(tr, batch)
    logp, phi = direct_logp_phi(tr.model, batch, ns)
    with torch.no_grad():
        ref_logp, ref_phi = direct_logp_phi(tr.ref_model, batch, ns)
    lr_w, lr_l = (logp - ref_logp).chunk(2)
    w, l = phi.chunk(2)
    rw, rl = ref_phi.chunk(2)
    m, m_ref = w - l, rw - rl
    if variant == "yoked_ref":
        mn = (m - m_ref) / std
    else:
        mn = ((m - mean) if center else m) / std
    if variant == "aux":
        loss = -F.logsigmoid(BETA * (lr_w - lr_l)).mean() + 0.7 * (-F.logsigmoid(GAMMA * mn)).mean()
    else:
        loss = -F.logsigmoid(BETA * (lr_w - lr_l) + GAMMA * mn).mean()
    assert l_tr == pytest.approx(float(loss), rel=1e-5, abs=1e-6)
    raw = -F.logsigmoid(BETA * (lr_w - lr_l) + GAMMA * (m - (m_ref if variant == "yoked_ref" else 0))).mean()
    assert abs(float(raw) - float(loss)) > 1e-4  # the scale matters here (a raw margin could not pass)
    loss.backward()
    scale = max(float(p.grad.abs().max()) for _, p in trainable(tr.model))
    for n, p in trainable(tr.model):
        torch.testing.assert_close(g_tr[n], p.grad, rtol=1e-4, atol=1e-5 * scale)
    # the share metrics are logged
    assert tr._metrics["train"]["neuron/gamma_eff"][-1] == pytest.approx(GAMMA)
    if variant != "aux":
        logit = BETA * (lr_w - lr_l)
        share = ((GAMMA * mn).abs() / ((GAMMA * mn).abs() + logit.abs())).mean()
        assert tr._metrics["train"]["neuron/logit_share"][-1] == pytest.approx(float(share), rel=1e-4)


def test_grad_ratio_gamma_equals_direct_autograd(files, tmp_path):
    d, pairs, npath = files
    cfg = cfg_for(
        tmp_path,
        pairs,
        lora=True,
        gamma=1.0,
        neurons=str(npath),
        gamma_mode="grad_ratio",
        grad_ratio_rho=0.5,
        grad_ratio_batches=2,
    )
    tr = make_yfpo(cfg, perturb=False)  # step 0: policy == reference
    ns = NeuronSet.load(npath)
    std = tr.calibration["std"]
    params = [p for _, p in trainable(tr.model)]
    ds = tr.train_dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    nd, nm = [], []
    for i, batch in enumerate(DataLoader(ds, batch_size=2, collate_fn=tr.data_collator, shuffle=False)):
        if i >= 2:
            break
        logp, phi = direct_logp_phi(tr.model, batch, ns)
        w, l = logp.chunk(2)
        pw, pl = phi.chunk(2)
        gd = torch.autograd.grad((0.1 * (w - l)).mean(), params, retain_graph=True, allow_unused=True)
        gm = torch.autograd.grad(((pw - pl) / std).mean(), params, allow_unused=True)
        nd.append(float(torch.sqrt(sum((g**2).sum() for g in gd if g is not None))))
        nm.append(float(torch.sqrt(sum((g**2).sum() for g in gm if g is not None))))
    want = 0.5 * (sum(nd) / 2) / (sum(nm) / 2)
    gr = tr.calibration["grad_ratio"]
    assert gr["grad_beta_delta_norms"] == pytest.approx(nd, rel=1e-4)
    assert gr["grad_margin_norms"] == pytest.approx(nm, rel=1e-4)
    assert tr.gamma_eff == pytest.approx(want, rel=1e-4) and tr.calibration["gamma_eff"] == tr.gamma_eff
    loss_and_grads(tr, first_batch(tr))
    assert tr._metrics["train"]["neuron/gamma_eff"][-1] == pytest.approx(want, rel=1e-4)
    assert 0 <= tr._metrics["train"]["neuron/grad_share"][-1] <= 1  # LoRA: on by default


# every loss family: the logit (or the pair of rewards) carries exactly gamma*m
_LOSSES = [
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]


def _closed_form(lt, c, r, Lc, Lr, n, b, eps):
    """Each loss written with its logit z (= beta*delta' + n) or its two rewards (beta*c' +- n/2)."""
    if lt in ("ipo", "sigmoid_norm"):
        c, r = c / Lc, r / Lr
    z = b * (c - r) + n
    zc, zr = b * c + n / 2, b * r - n / 2
    if lt == "sigmoid" or lt == "sigmoid_norm":
        return -F.logsigmoid(z)
    if lt == "hinge":
        return torch.relu(1 - z)
    if lt == "ipo":
        return (z / b - 1 / (2 * b)) ** 2
    if lt == "exo_pair":
        e = torch.tensor(eps)
        return torch.sigmoid(z) * (F.logsigmoid(z) - torch.log1p(-e)) + torch.sigmoid(-z) * (
            F.logsigmoid(-z) - torch.log(e)
        )
    if lt == "robust":
        return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    if lt == "discopop":
        mod = torch.sigmoid(z / 0.05)
        return -F.logsigmoid(z) * (1 - mod) + torch.exp(-z) * mod
    if lt == "nca_pair":
        return -F.logsigmoid(zc) - 0.5 * F.logsigmoid(-zc) - 0.5 * F.logsigmoid(-zr)
    if lt == "bco_pair":
        return -F.logsigmoid(zc) - F.logsigmoid(-zr)
    if lt == "sppo_hard":
        return (zc / b - 0.5 / b) ** 2 + (zr / b + 0.5 / b) ** 2
    if lt == "apo_zero":
        return (1 - torch.sigmoid(zc)) + torch.sigmoid(zr)
    if lt == "apo_down":
        return torch.sigmoid(zc) + (1 - torch.sigmoid(z))
    raise AssertionError(lt)


@pytest.mark.parametrize("lt", _LOSSES)
def test_every_loss_sees_exactly_gamma_m(lt):
    g = torch.Generator().manual_seed(0)
    c, r = torch.randn(5, generator=g) * 3, torch.randn(5, generator=g) * 3
    Lc, Lr = torch.tensor([3.0, 7.0, 12.0, 40.0, 1.0]), torch.tensor([9.0, 2.0, 30.0, 5.0, 4.0])
    n = torch.randn(5, generator=g)  # gamma * m
    eps = 0.1 if lt in ("exo_pair", "robust") else 0.0
    got = pairwise_loss(lt, c, r, 0.1, label_smoothing=eps, chosen_len=Lc, rejected_len=Lr, neuron=n)
    torch.testing.assert_close(got, _closed_form(lt, c, r, Lc, Lr, n, 0.1, eps), rtol=1e-5, atol=1e-6)
    without = pairwise_loss(lt, c, r, 0.1, label_smoothing=eps, chosen_len=Lc, rejected_len=Lr)
    torch.testing.assert_close(without, _closed_form(lt, c, r, Lc, Lr, torch.zeros(5), 0.1, eps), rtol=1e-5, atol=1e-6)
    assert (got - without).abs().max() > 1e-3


def test_config_refusals():
    with pytest.raises(ValueError, match="sft"):
        TrainConfig(pairs="p", loss_type="sft", gamma=1.0, neurons="n").validate()
    with pytest.raises(ValueError, match="neuron_norm"):
        TrainConfig(pairs="p", neuron_norm="zscore").validate()
    with pytest.raises(ValueError, match="gamma_mode"):
        TrainConfig(pairs="p", gamma_mode="auto").validate()


def test_calibration_reused_on_resume(files, tmp_path):
    """A second trainer in the same run directory reads calibration.json instead of measuring again."""
    d, pairs, npath = files
    cfg = cfg_for(tmp_path, pairs, lora=False, gamma=GAMMA, neurons=str(npath))
    tr = make_yfpo(cfg)
    path = tmp_path / "run" / "calibration.json"
    cal = json.loads(path.read_text())
    cal["std"] = 123.0  # marked: a recomputation would not give this
    path.write_text(json.dumps(cal))
    tr2 = make_yfpo(cfg)
    assert tr2.calibration["std"] == 123.0
    # a changed setting (another key) is measured afresh
    tr3 = make_yfpo(cfg_for(tmp_path, pairs, lora=False, gamma=GAMMA, neurons=str(npath), neuron_center=True))
    assert tr3.calibration["std"] == pytest.approx(tr.calibration["std"])


@pytest.mark.parametrize("variant", ["yoked", "yoked_ref"])
def test_reference_file_equals_live_and_trl_precompute(files, tmp_path, variant):
    from yfpo.train.precompute import compute_reference

    d, pairs, npath = files
    model, tok = tiny_model("llama", seed=0)
    ns = NeuronSet.load(npath)
    base = cfg_for(tmp_path, pairs, lora=False, gamma=GAMMA, neurons=str(npath), variant=variant)
    ref_file = compute_reference(base, {"attnlrp": ns}, tmp_path / "ref.json", model=model, tokenizer=tok)
    data = json.loads(ref_file.read_text())
    assert data["n_pairs"] == 6 and "attnlrp" in data["m_ref"]
    live = make_yfpo(base)
    from_file = make_yfpo(
        cfg_for(
            tmp_path / "f", pairs, lora=False, gamma=GAMMA, neurons=str(npath), variant=variant, ref_logps=str(ref_file)
        )
    )
    trl_pre = make_yfpo(
        cfg_for(
            tmp_path / "t", pairs, lora=False, gamma=GAMMA, neurons=str(npath), variant=variant, precompute_ref=True
        )
    )
    assert from_file.ref_model is None and from_file.precompute_ref_logps
    assert from_file.calibration["m_ref_source"] == str(ref_file)
    assert from_file.calibration["std"] == pytest.approx(live.calibration["std"], rel=1e-5)
    batch_live = first_batch(live)
    batch_file = first_batch(from_file)
    batch_pre = first_batch(trl_pre)
    torch.testing.assert_close(batch_file["ref_chosen_logps"], batch_pre["ref_chosen_logps"], rtol=1e-6, atol=1e-6)
    l_live, g_live = loss_and_grads(live, batch_live)
    l_file, g_file = loss_and_grads(from_file, batch_file)
    l_pre, _ = loss_and_grads(trl_pre, batch_pre)
    assert l_file == pytest.approx(l_live, rel=1e-5, abs=1e-6)
    assert l_file == pytest.approx(l_pre, rel=1e-6, abs=1e-7)
    for n in g_live:
        torch.testing.assert_close(g_file[n], g_live[n], rtol=1e-4, atol=1e-6)
    # a file for other inputs is refused, naming what differs
    with pytest.raises(ValueError, match="limit_pairs"):
        make_yfpo(
            cfg_for(
                tmp_path / "g",
                pairs,
                lora=False,
                gamma=GAMMA,
                neurons=str(npath),
                ref_logps=str(ref_file),
                limit_pairs=4,
            )
        )


def test_trl_options_pass_through(files, tmp_path):
    d, pairs, npath = files
    tr = make_yfpo(cfg_for(tmp_path, pairs, trl={"truncation_mode": "keep_end", "pad_to_multiple_of": 8}))
    assert tr.args.truncation_mode == "keep_end" and tr.args.pad_to_multiple_of == 8
    assert first_batch(tr)["input_ids"].shape[1] % 8 == 0  # the option reached TRL's collator
    with pytest.raises(ValueError, match="truncaton_mode.*did you mean 'truncation_mode'"):
        from_dict(TrainConfig, {"pairs": "p", "trl": {"truncaton_mode": "keep_end"}})
    with pytest.raises(ValueError, match="lr and learning_rate are the same option"):  # an older name and TRL's
        from_dict(TrainConfig, {"pairs": "p", "lr": 1e-4, "trl": {"learning_rate": 1e-3}})
    with pytest.raises(ValueError, match="model_init_kwargs is set by yfpo: yfpo loads the model itself"):
        from_dict(TrainConfig, {"pairs": "p", "model_init_kwargs": {"dtype": "bfloat16"}})


def test_held_out_margin_measure_equals_the_trainers_m_ref(files, tmp_path):
    """yfpo.eval.margin (held-out pairs, after training) measures what the trainer's reference pass measures."""
    from yfpo.data.pairs import load_pairs
    from yfpo.eval.margin import neuron_margins, summarize
    from yfpo.train.precompute import compute_reference

    d, pairs, npath = files
    model, tok = tiny_model("llama", seed=0)
    ns = NeuronSet.load(npath)
    base = cfg_for(tmp_path, pairs, lora=False, gamma=GAMMA, neurons=str(npath))
    data = json.loads(compute_reference(base, {"s": ns}, tmp_path / "r.json", model=model, tokenizer=tok).read_text())
    got = neuron_margins(model, tok, ns, load_pairs(pairs), max_length=base.max_length)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(data["m_ref"]["s"]["m_ref"]), rtol=1e-4, atol=1e-5)
    swapped = [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen) for p in load_pairs(pairs)]
    assert neuron_margins(model, tok, ns, swapped) == pytest.approx([-m for m in got], abs=1e-6)
    s = summarize(got)
    assert s["n"] == len(got) and s["se"] == pytest.approx(s["sd"] / len(got) ** 0.5)

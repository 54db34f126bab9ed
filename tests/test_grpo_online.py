"""The online-RL methods wired into the GRPO stage: engine rollouts against TRL's generate, the PACS / OREAL loss types
inside the trainer against the pure functions on directly computed log-probs (and with the neuron loss term), the
frozen-state features against a hook-free forward, a resumed MERCI run against an uninterrupted one, an RLPT run."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_common import manual_forward, one_thread, trainable, write_jsonl, write_neuronset  # noqa: F401
from test_train_grpo import G, cfg_for, fixed_batch, loss_grads, make

from yfpo.models.tiny import save_tiny, tiny_model
from yfpo.train.grpo_config import GRPORunConfig
from yfpo.train.online import oreal, pacs
from yfpo.train.online.rollout import repeated_blocks


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpo_online")
    rows = [
        {"question": f"Tom has {i} apples and buys {i + 2} more. How many now?", "answer": str(2 * i + 2)}
        for i in range(1, 9)
    ]
    q = write_jsonl(d / "questions.jsonl", rows)
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(d / "neurons.json", model, k_per_layer=6)
    return d, q, d / "neurons.json"


def direct_logps(model, batch):
    """log pi(o_t | q, o_<t) from one plain forward of the padded batch (no TRL code)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    C = batch["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=att).logits[:, -C - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, batch["completion_ids"][..., None]).squeeze(-1)


OUTCOME = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0])


# ---------------------------------------------------------------- rollouts


def test_engine_rollout_greedy_equals_trl_generate(files, tmp_path):
    """Greedy: the engine's completions are TRL's model.generate's, token for token (prompt ids too). Sampled: both
    draw from the same temperature/top-p distribution but from different random streams (the engine by inverse
    CDF per (seed, step, prompt, sample) — tests/test_seeded_sampling.py checks that sampler), so only the greedy
    tokens can be compared; here sampled rollouts are checked to be reproducible and step-dependent."""
    d, q, _ = files
    eng = make(cfg_for(tmp_path / "e", q, max_new_tokens=12))
    trl = make(cfg_for(tmp_path / "t", q, max_new_tokens=12, rollout="trl"))
    prompts = [p for p in eng.train_dataset["prompt"][:3] for _ in range(G)]
    assert repeated_blocks(prompts, G) and not repeated_blocks(prompts[1:] + prompts[:1], G)
    outs = []
    for tr in (eng, trl):
        tr.model.train()
        tr.generation_config.do_sample = False
        outs.append(tr._generate(prompts))
    (p_e, c_e, *_), (p_t, c_t, *_) = outs
    assert p_e == p_t
    assert c_e == c_t and any(len(c) > 1 for c in c_e)
    eng.generation_config.do_sample = True
    a = eng._generate(prompts)[1]
    assert a == eng._generate(prompts)[1]  # seeded: the same step samples the same completions
    assert len({tuple(c) for c in a[:G]}) > 1  # the G samples of a prompt differ
    eng.state.global_step += 1
    assert eng._generate(prompts)[1] != a  # the next step draws anew


# ---------------------------------------------------------------- PACS / OREAL in the trainer


def method_batch(tr):
    b = fixed_batch(tr)
    b["outcome"] = OUTCOME.clone()
    return b


def test_pacs_loss_type_in_trainer_equals_pure_function(files, tmp_path):
    d, q, _ = files
    tr = make(cfg_for(tmp_path, q, loss_type="pacs", pacs_beta=2.0))
    batch = method_batch(tr)
    loss, grads = loss_grads(tr, batch)
    tr.model.zero_grad(set_to_none=True)
    lp = direct_logps(tr.model, batch)
    mask = batch["completion_mask"].float()
    want, _ = pacs.pacs_loss(lp, lp.detach(), mask, OUTCOME, batch["group_ids"], beta=2.0)
    want.backward()
    torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-6)
    for n, p in trainable(tr.model):
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-3, atol=1e-7, msg=n)
    assert any(g.abs().sum() > 0 for g in grads.values())  # on-policy psi = 0, yet the gradient is the PG's
    assert tr._metrics["train"]["pacs/psi"][-1] == 0.0


def test_oreal_loss_type_with_kl_and_neuron_term(files, tmp_path):
    """OREAL (KL coefficient = beta, against TRL's reference log-probs) equals oreal_loss on direct log-probs; with the
    neuron loss term on, the loss grows by exactly that term (it composes with the method's loss)."""
    d, q, ns = files
    lora = dict(lora=True, lora_r=4, lora_alpha=8)  # (beta > 0 without LoRA would load a reference copy by name)
    tr = make(cfg_for(tmp_path / "a", q, loss_type="oreal", beta=0.05, **lora))
    batch = method_batch(tr)
    g = torch.Generator().manual_seed(3)
    batch["ref_per_token_logps"] = direct_logps(tr.model, batch).detach() + 0.1 * torch.randn(8, 7, generator=g)
    loss, _ = loss_grads(tr, batch)
    with torch.no_grad():
        lp = direct_logps(tr.model, batch)
    want, _ = oreal.oreal_loss(
        lp,
        lp,
        batch["completion_mask"].float(),
        OUTCOME,
        batch["group_ids"],
        batch["ref_per_token_logps"],
        kl_coef=0.05,
    )
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    both = make(
        cfg_for(tmp_path / "b", q, loss_type="oreal", beta=0.05, neurons=str(ns), neuron_loss_weight=0.5, **lora)
    )
    loss_b, _ = loss_grads(both, batch)
    term = both._metrics["train"]["neuron/loss_term"][-1]
    assert term > 0 and both._metrics["train"]["neuron/pairs"][-1] > 0
    torch.testing.assert_close(loss_b.item(), loss.item() + 0.5 * term, rtol=1e-5, atol=1e-6)


def test_states_are_the_frozen_base_models(files, tmp_path):
    """The state features MERCI and OREAL's token weights read: the last hidden state / the NeuronSet's standardised
    signed activations of the base model (LoRA adapters off), at the last prompt token and every completion token."""
    from yfpo.neurons.neuronset import NeuronSet

    d, q, ns_path = files
    tr = make(cfg_for(tmp_path, q, neurons=str(ns_path), lora=True, lora_r=4, lora_alpha=8))
    with torch.no_grad():  # make the adapters matter
        for n, p in tr.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    base, _ = tiny_model("llama", seed=0)
    batch = fixed_batch(tr)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    h = tr.online.states(ids, att, 7)
    z = tr.online.states(ids, att, 7, neurons=True)
    ns = NeuronSet.load(ns_path)
    order = torch.cat([ns.by_layer()[l] for l in sorted(ns.by_layer())])
    for i in (0, 5):  # row 5: a left-padded prompt
        real = ids[i][att[i].bool()]
        with torch.no_grad():
            _, us, hid = manual_forward(base, real)
        n_c = int(batch["completion_mask"][i].sum())
        keep = slice(len(real) - n_c - 1, len(real))
        torch.testing.assert_close(h[i, : n_c + 1], hid[keep], rtol=1e-4, atol=1e-5)
        u = torch.stack([us[int(ns.layers[k])][:, int(ns.indices[k])] for k in order.tolist()], -1)
        want = (u - ns.mean[order]) / ns.std[order] * ns.signs[order]
        torch.testing.assert_close(z[i, : n_c + 1], want[keep], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- MERCI: resumed == uninterrupted


def test_merci_resumed_run_equals_uninterrupted(files, tmp_path):
    from test_train_common import StopAfter

    from yfpo.train.grpo import grpo

    d, q, _ = files
    mdir = save_tiny(tmp_path / "tiny", "llama", seed=0)
    kw = dict(
        model=str(mdir),
        intrinsic="merci",
        merci_weight=0.5,
        max_steps=4,
        lora=True,
        lora_r=4,
        lora_alpha=8,
        max_new_tokens=6,
        merci_buffer=50,
        merci_batch=16,
        merci_updates=2,
        merci_coins=8,
        merci_hidden=8,
        keep_checkpoints=True,
    )
    full = grpo(cfg_for(tmp_path / "full", q, **kw))
    cut = cfg_for(tmp_path / "cut", q, **kw)
    out = grpo(cut, callbacks=[StopAfter(2)])
    assert (
        not (out / "train_done.json").exists() and (out / "checkpoints" / "checkpoint-2" / "online_state.pt").exists()
    )
    out = grpo(cut)  # resumes at step 2: model, optimiser, RNG (TRL) and the CFN (ours) come back

    def steps(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in rows if "loss" in r}

    a, b = steps(full), steps(out)
    assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [1, 2, 3, 4]
    for s in (3, 4):
        for k in ("rewards/merci/mean", "merci/bonus", "merci/cfn_loss", "loss", "completions/mean_length"):
            assert a[s][k] == b[s][k], (s, k)
    assert len({a[s]["rewards/merci/mean"] for s in a}) > 1
    sa = torch.load(full / "checkpoints" / "checkpoint-4" / "online_state.pt", weights_only=True)["cfn"]
    sb = torch.load(out / "checkpoints" / "checkpoint-4" / "online_state.pt", weights_only=True)["cfn"]
    assert torch.equal(sa["feats"], sb["feats"]) and torch.equal(sa["gen"], sb["gen"])
    for k in sa["net"]:
        assert torch.equal(sa["net"][k], sb["net"][k]), k


# ---------------------------------------------------------------- RLPT


def test_rlpt_mode_runs_with_the_policy_as_judge(files, tmp_path):
    from yfpo.train.grpo import grpo, make_grpo_trainer

    d, q, _ = files
    cfg = cfg_for(tmp_path, q, mode="rlpt", rlpt_corpus="mix", rlpt_texts=8, max_new_tokens=8, rlpt_judge_tokens=3)
    model, tok = tiny_model("llama", seed=0)
    tr, _ = make_grpo_trainer(cfg, model=model, tokenizer=tok)
    ds = tr.train_dataset
    assert set(ds["task"]) == {"asr", "msr"} and all("<answer></answer>" in p for p in ds["prompt"])
    assert all(r.strip() for r in ds["reference"])
    out = grpo(cfg, model=model, tokenizer=tok)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    for k in ("rewards/rlpt/mean", "rlpt/judge_yes", "rlpt/judge_unparsed"):
        assert k in rows[0], k


# ---------------------------------------------------------------- config


def test_method_config_validation():
    ok = dict(questions="custom")
    GRPORunConfig(**ok, loss_type="pacs").validate()
    GRPORunConfig(**ok, loss_type="oreal", oreal_token_weights="probe").validate()
    GRPORunConfig(**ok, intrinsic="merci", mode="rlpt").validate()
    for bad, msg in (
        (dict(loss_type="ppo"), "loss_type 'ppo'"),
        (dict(loss_type="pacs", grad_accum=2, batch_size=2), "grad_accum must be 1"),
        (dict(loss_type="pacs", intrinsic="merci"), "binary outcome label"),
        (dict(loss_type="oreal", neurons="n.json", neuron_reward_weight=0.5), "binary outcome label"),
        (dict(oreal_token_weights="probe"), "needs loss_type: oreal"),
        (dict(loss_type="oreal", oreal_token_weights="neuron"), "need a NeuronSet"),
        (dict(intrinsic="merci", merci_features="neurons"), "need a NeuronSet"),
        (dict(intrinsic="merci", merci_weight=0.0), "merci_weight"),
        (dict(mode="pretrain"), "mode 'pretrain'"),
        (dict(rollout="vllm"), "rollout 'vllm'"),
        (dict(rlpt_task="ntp"), "rlpt_task"),
        (dict(merci_coins=0), "merci_coins"),
    ):
        with pytest.raises(ValueError, match=msg):
            GRPORunConfig(**ok, **bad).validate()


@pytest.mark.parametrize(
    "keys",
    [
        dict(loss_type="pacs", num_iterations=2),
        dict(loss_type="oreal", oreal_token_weights="probe"),
        dict(loss_type="oreal", oreal_token_weights="neuron", neuron_loss_weight=0.5),
    ],
    ids=["pacs", "oreal_probe", "oreal_neuron"],
)
def test_method_loss_types_run_end_to_end(files, tmp_path, keys):
    """A 2-step run of each loss type: PACS's second update reuses the batch, so pi_old != pi and psi != 0 there."""
    from yfpo.train.grpo import grpo

    d, q, ns = files
    model, tok = tiny_model("llama", seed=0)
    cfg = cfg_for(tmp_path, q, neurons=str(ns), max_steps=2, max_new_tokens=6, **keys)
    out = grpo(cfg, model=model, tokenizer=tok)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [r["step"] for r in rows] == [1, 2]
    if keys["loss_type"] == "pacs":
        assert rows[0]["pacs/psi_abs"] == 0.0 and rows[1]["pacs/psi_abs"] > 0.0
    else:
        assert "oreal/pos_weight" in rows[0] and "oreal/neg_loss" in rows[0]
        assert ("oreal/probe_loss" in rows[0]) == (keys["oreal_token_weights"] == "probe")


def test_neuron_token_scores_are_standardised_over_completion_tokens():
    from yfpo.train.online.hooks import neuron_token_scores

    m = torch.tensor([[0.01, 0.03, 9.0], [0.02, 0.00, 0.04]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    v = torch.tensor([0.01, 0.03, 0.02, 0.00, 0.04])
    z = neuron_token_scores(m, mask)
    torch.testing.assert_close(z[mask.bool()], (v - v.mean()) / (v.std() + 1e-6))
    assert neuron_token_scores(m, torch.zeros_like(mask)).abs().sum() == 0

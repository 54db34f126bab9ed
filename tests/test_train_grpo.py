"""GRPO stage (yfpo.train.grpo): with the neuron weights at 0 it is TRL's GRPOTrainer; the neuron loss term's gradient
equals a direct autograd computation (hook-free forward, SPEC's phi formula); the neuron reward is the
group-standardised phi; truncated completions are masked as configured; a tiny run finishes and resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from test_train_common import manual_forward, one_thread, trainable, write_jsonl, write_neuronset  # noqa: F401

from yfpo.models.tiny import save_tiny, tiny_model
from yfpo.train.grpo import (
    NeuronReward,
    accuracy_reward_fn,
    group_standardize,
    make_grpo_args,
    make_grpo_trainer,
    neuron_pair_loss,
    pair_margins,
)
from yfpo.train.grpo_config import GRPORunConfig

G = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpo")
    rows = [
        {"question": f"Tom has {i} apples and buys {i + 2} more. How many now?", "answer": str(2 * i + 2)}
        for i in range(1, 5)
    ]
    q = write_jsonl(d / "questions.jsonl", rows)
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(d / "neurons.json", model, k_per_layer=6)
    return d, q, d / "neurons.json"


def cfg_for(tmp_path, q, **kw) -> GRPORunConfig:
    base = dict(
        questions="custom",
        questions_file=str(q),
        output_dir=str(tmp_path / "run"),
        lora=False,
        device="cpu",
        num_generations=G,
        batch_size=G,
        max_new_tokens=8,
        max_steps=1,
        logging_steps=1,
        save_steps=1,
        lr=1e-3,
        extractor="flexible",
    )
    base.update(kw)
    return GRPORunConfig(**base)


def make(cfg, seed=0):
    model, tok = tiny_model("llama", seed=seed)
    tr, _ = make_grpo_trainer(cfg, model=model, tokenizer=tok)
    tr.current_gradient_accumulation_steps = 1
    return tr


def fixed_batch(tr, seed=0, truncated_row=None):
    """A GRPO micro-batch of 2 groups x G completions, with left-padded prompts and right-padded completions."""
    g = torch.Generator().manual_seed(seed)
    n, P, C, V = 2 * G, 6, 7, tr.model.config.vocab_size
    pad = tr._tokenizer.pad_token_id
    prompt_ids = torch.randint(5, V, (n, P), generator=g)
    prompt_mask = torch.ones(n, P, dtype=torch.long)
    prompt_mask[G:, :2] = 0  # the second group's prompt is shorter (left padding)
    prompt_ids[prompt_mask == 0] = pad
    completion_ids = torch.randint(5, V, (n, C), generator=g)
    lens = torch.tensor([7, 5, 3, 6, 2, 7, 4, 5])
    completion_mask = (torch.arange(C)[None] < lens[:, None]).long()
    if truncated_row is not None:
        completion_mask[truncated_row] = 0  # what TRL's mask_truncated_completions does
    completion_ids[completion_mask == 0] = pad
    adv = torch.tensor([1.2, -0.4, -0.8, 0.0, 0.9, -1.1, 0.5, -0.3])
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": adv,
        "num_items_in_batch": completion_mask.sum(),
        "group_ids": torch.arange(n) // G,
    }


def loss_grads(tr, batch):
    m = tr.model
    m.train()
    m.zero_grad(set_to_none=True)
    loss = tr.compute_loss(m, dict(batch))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainable(m)}
    m.zero_grad(set_to_none=True)
    return loss.detach(), grads


# ---------------------------------------------------------------- pure functions


def test_group_standardize_matches_formula_and_skips_invalid():
    v = torch.tensor([1.0, 2.0, 4.0, 7.0, 3.0, 3.0, 5.0, -1.0])
    z = group_standardize(v, 4)
    for k in range(2):
        x = v[4 * k : 4 * k + 4]
        torch.testing.assert_close(z[4 * k : 4 * k + 4], (x - x.mean()) / (x.std() + 1e-4))
    valid = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1]).bool()
    z = group_standardize(v, 4, valid)
    assert math.isnan(z[2])
    x = v[[0, 1, 3]]
    torch.testing.assert_close(z[[0, 1, 3]], (x - x.mean()) / (x.std() + 1e-4))
    with pytest.raises(ValueError, match="groups of 3"):
        group_standardize(v, 3)


def test_pair_margins_only_same_group_pos_over_neg():
    phi = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 20.0])
    adv = torch.tensor([1.0, -1.0, -2.0, 0.0, -1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    m = pair_margins(phi, adv, groups)
    assert sorted(m.tolist()) == [-2.0, -1.0, 10.0]  # (0,1), (0,2) in group 0; (5,4) in group 1
    m = pair_margins(phi, adv, groups, valid=torch.tensor([1, 0, 1, 1, 1, 1]).bool())
    assert sorted(m.tolist()) == [-2.0, 10.0]
    assert neuron_pair_loss(m[:0], 1.0, 1.0).item() == 0.0


# ---------------------------------------------------------------- equivalence with TRL


def test_neuron_weight_zero_equals_trl_grpo(files, tmp_path):
    from trl import GRPOTrainer

    d, q, ns = files
    cfg = cfg_for(tmp_path, q, neurons=str(ns), neuron_reward_weight=0.0, neuron_loss_weight=0.0)
    ours = make(cfg)
    model, tok = tiny_model("llama", seed=0)
    trl_tr = GRPOTrainer(
        model=model,
        reward_funcs=[accuracy_reward_fn("flexible")],
        args=make_grpo_args(cfg, tmp_path / "trl"),
        train_dataset=ours.train_dataset,
        processing_class=tok,
    )
    trl_tr.current_gradient_accumulation_steps = 1
    assert type(ours).__mro__[1] is GRPOTrainer
    batch = fixed_batch(ours)
    l1, g1 = loss_grads(ours, batch)
    l2, g2 = loss_grads(trl_tr, {k: v for k, v in batch.items() if k != "group_ids"})
    assert torch.equal(l1, l2)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for n in g1:
        assert torch.equal(g1[n], g2[n]), n


def test_generation_and_scoring_equal_trl_with_weight_zero(files, tmp_path):
    """Same seed, same prompts: same completions, rewards and advantages as TRL's own GRPOTrainer (rollout: trl, TRL's
    model.generate; the engine's rollouts are compared with it in test_grpo_online.py)."""
    from trl import GRPOTrainer

    d, q, ns = files
    cfg = cfg_for(tmp_path, q, neurons=str(ns), rollout="trl")
    ours = make(cfg)
    model, tok = tiny_model("llama", seed=0)
    trl_tr = GRPOTrainer(
        model=model,
        reward_funcs=[accuracy_reward_fn("flexible")],
        args=make_grpo_args(cfg, tmp_path / "trl"),
        train_dataset=ours.train_dataset,
        processing_class=tok,
    )
    inputs = [dict(ours.train_dataset[0]) for _ in range(G)]
    outs = []
    for tr in (ours, trl_tr):
        tr.model.train()
        torch.manual_seed(7)
        outs.append(tr._generate_and_score_completions([dict(x) for x in inputs]))
    a, b = outs
    for k in ("prompt_ids", "completion_ids", "completion_mask", "advantages"):
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(a["group_ids"], torch.zeros(G, dtype=torch.long))


# ---------------------------------------------------------------- (b) loss term vs direct autograd


def direct_phi(model, batch, ns):
    """SPEC's phi per row from a hook-free forward of each unpadded sequence (response tokens = completion)."""
    phis = []
    for r in range(batch["prompt_ids"].shape[0]):
        p = batch["prompt_ids"][r][batch["prompt_mask"][r].bool()]
        cm = batch["completion_mask"][r].bool()
        c = batch["completion_ids"][r][cm]
        ids = torch.cat([p, c])
        _, us, _ = manual_forward(model, ids)
        resp = torch.zeros(ids.numel(), dtype=torch.bool)
        resp[p.numel() :] = True
        terms = []
        for k in range(len(ns)):
            u = us[int(ns.layers[k])][:, int(ns.indices[k])]
            z = (u[resp] - ns.mean[k]) / ns.std[k] if resp.any() else u[:0]
            terms.append(ns.signs[k] * (z.mean() if z.numel() else u.sum() * 0))
        phis.append(torch.stack(terms).mean())
    return torch.stack(phis)


@pytest.mark.parametrize("truncated_row", [None, 0])
def test_loss_term_gradient_equals_direct_autograd(files, tmp_path, truncated_row):
    from yfpo.neurons.neuronset import NeuronSet

    d, q, ns_path = files
    lam, gamma = 0.7, 2.0
    base = make(cfg_for(tmp_path / "a", q))
    ours = make(cfg_for(tmp_path / "b", q, neurons=str(ns_path), neuron_loss_weight=lam, neuron_gamma=gamma))
    batch = fixed_batch(ours, truncated_row=truncated_row)
    l0, g0 = loss_grads(base, batch)
    l1, g1 = loss_grads(ours, batch)
    scale = ours.neuron_scale
    ns = NeuronSet.load(ns_path)
    # direct: phi from the hook-free forward, pairs and the term written out here
    model = ours.model
    model.zero_grad(set_to_none=True)
    phi = direct_phi(model, batch, ns)
    valid = batch["completion_mask"].sum(1) > 0
    pairs = [
        (i, j)
        for i in range(8)
        for j in range(8)
        if batch["group_ids"][i] == batch["group_ids"][j]
        and batch["advantages"][i] > 0 > batch["advantages"][j]
        and valid[i]
        and valid[j]
    ]
    m = torch.stack([phi[i] - phi[j] for i, j in pairs])
    assert scale == pytest.approx(m.detach().std().item(), rel=1e-5)  # calibrated at the first batch
    term = -F.logsigmoid(gamma * m / scale).mean()
    (lam * term).backward()
    gd = {
        n: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()) for n, p in trainable(model)
    }  # params after the neurons: 0
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(l1 - l0, (lam * term).detach(), rtol=1e-4, atol=1e-6)
    for n in gd:
        torch.testing.assert_close(g1[n] - g0[n], gd[n], rtol=1e-3, atol=1e-6, msg=n)
    if truncated_row is not None:
        assert all(truncated_row not in p for p in pairs)
    assert (tmp_path / "b" / "run" / "neuron_scale.json").exists()


# ---------------------------------------------------------------- (a) the neuron reward


@pytest.mark.parametrize("mask_truncated", [False, True])
def test_neuron_reward_is_group_standardised_phi(files, tmp_path, mask_truncated):
    from yfpo.neurons.neuronset import NeuronSet

    d, q, ns_path = files
    cfg = cfg_for(
        tmp_path, q, neurons=str(ns_path), neuron_reward_weight=0.5, mask_truncated_completions=mask_truncated
    )
    tr = make(cfg)
    fn = [f for f in tr.reward_funcs if isinstance(f, NeuronReward)][0]
    assert tr.reward_weights.tolist() == [1.0, 0.5]
    eos = tr._tokenizer.eos_token_id
    prompts = [[11, 12, 13, 14]] * G + [[21, 22, 23]] * G
    comps = [
        [30, 31, eos],
        [32, eos],
        [33, 34, 35],
        [36, 37, 38, eos],
        [40, eos],
        [41, 42, eos],
        [43, 44],
        [45, 46, 47, eos],
    ]  # rows 2 and 6 end without EOS: truncated
    tr._last_prompt_ids = prompts
    logged = {}
    got = fn(prompts=["p"] * 8, completions=["c"] * 8, completion_ids=comps, log_metric=logged.__setitem__)
    ns = NeuronSet.load(ns_path)
    with torch.no_grad():
        phi = []
        for p, c in zip(prompts, comps):
            b = {
                "prompt_ids": torch.tensor([p]),
                "prompt_mask": torch.ones(1, len(p), dtype=torch.long),
                "completion_ids": torch.tensor([c]),
                "completion_mask": torch.ones(1, len(c), dtype=torch.long),
            }
            phi.append(direct_phi(tr.model, b, ns)[0])
        phi = torch.stack(phi)
    valid = torch.tensor([c[-1] == eos for c in comps]) if mask_truncated else torch.ones(8, dtype=torch.bool)
    for k in range(2):
        sl = slice(4 * k, 4 * k + 4)
        x = phi[sl][valid[sl]]
        want = (x - x.mean()) / (x.std() + 1e-4)
        gk = torch.tensor([v for v, ok in zip(got[sl], valid[sl]) if ok])
        torch.testing.assert_close(gk, want, rtol=1e-4, atol=1e-4)
    assert [g is None for g in got] == [not bool(v) for v in valid]
    assert logged["neuron/phi"] == pytest.approx(phi.mean().item(), rel=1e-4, abs=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="NeuronSet"):
        GRPORunConfig(neuron_loss_weight=0.1).validate()
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPORunConfig(num_generations=4, batch_size=6).validate()
    with pytest.raises(ValueError, match="extractor"):
        GRPORunConfig(extractor="regex").validate()
    with pytest.raises(ValueError, match="skip_questions must be >= 0"):
        GRPORunConfig(skip_questions=-1).validate()


def test_trl_options_override_defaults_and_yfpo_keys_are_refused(tmp_path):
    from yfpo.config import ConfigError, from_dict, load_config

    base = GRPORunConfig(output_dir=str(tmp_path / "run"))
    args = make_grpo_args(base.validate(), tmp_path)
    assert args.report_to == [] and args.save_strategy.value == "steps" and args.save_only_model is False
    cfg = from_dict(GRPORunConfig, {"trl": {"save_strategy": "no", "save_only_model": True, "max_grad_norm": 0.5}})
    args = make_grpo_args(cfg.validate(), tmp_path)
    assert args.save_strategy.value == "no" and args.save_only_model is True and args.max_grad_norm == 0.5
    # the stage hash: unchanged by an empty trl or a tracker; changed by an option that decides the weights
    assert "trl" not in base.record()
    assert from_dict(GRPORunConfig, {"trl": {"report_to": "tensorboard"}}).record() == GRPORunConfig().record()
    assert cfg.record()["trl"] == {"max_grad_norm": 0.5}
    for trl, msg in (
        ({"learning_rate": 1e-3}, "trl.learning_rate is set by yfpo from its own key: set lr instead"),
        ({"resume_from_checkpoint": "x"}, "trl.resume_from_checkpoint is set by yfpo: yfpo resumes"),
        ({"report_too": "tensorboard"}, "trl.report_too is not a trl.GRPOConfig option .did you mean 'report_to'"),
        ({"report_to": "nosuchtracker"}, "report_to nosuchtracker: its package is not installed"),
    ):
        with pytest.raises(ValueError, match=msg):
            from_dict(GRPORunConfig, {"trl": trl}).validate()
    with pytest.raises(ConfigError, match="trl.*expected a mapping"):
        from_dict(GRPORunConfig, {"trl": "report_to"})
    # a command line's `--trl.KEY V` is typed as GRPOConfig declares KEY
    over = load_config(GRPORunConfig, None, ["--trl.max_grad_norm", "0.5", "--trl.save_only_model", "true"])
    assert over.trl == {"max_grad_norm": 0.5, "save_only_model": True}
    with pytest.raises(ConfigError, match="trl.max_grad_norm.*expected a number"):
        load_config(GRPORunConfig, None, ["--trl.max_grad_norm", "abc"])


def test_tiny_run_reports_to_tensorboard_with_trl_options(files, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from yfpo.train.grpo import grpo

    d, q, ns = files
    mdir = save_tiny(tmp_path / "tiny", "llama", seed=0)
    trl = {"report_to": "tensorboard", "save_strategy": "no", "disable_tqdm": True, "save_only_model": True}
    cfg = cfg_for(tmp_path, q, model=str(mdir), max_steps=2, lora=True, lora_r=4, lora_alpha=8, trl=trl)
    out = grpo(cfg)
    assert json.loads((out / "train_done.json").read_text())["steps"] == 2
    assert list((out / "tensorboard").glob("events.out.tfevents.*")), sorted(p.name for p in out.rglob("*"))
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/rewards/accuracy/mean", "train/completions/mean_length"):
        assert tag in tags, (tag, sorted(tags))
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]


def test_skip_and_limit_questions_pick_the_slice(files, tmp_path):
    from yfpo.models.tiny import tiny_tokenizer
    from yfpo.train.grpo import build_question_dataset

    _, q, _ = files
    tok = tiny_tokenizer()
    ds = build_question_dataset(cfg_for(tmp_path, q, skip_questions=1, limit_questions=2), tok)
    assert ds["answer"] == ["6", "8"]  # questions #1 and #2 of 4 (answers 4, 6, 8, 10)
    with pytest.raises(ValueError, match="no problems loaded \\(skip_questions 4\\)"):
        build_question_dataset(cfg_for(tmp_path, q, skip_questions=4), tok)


# ---------------------------------------------------------------- end to end: run, metrics, resume


def test_tiny_run_finishes_logs_and_resumes(files, tmp_path):
    from test_train_common import StopAfter

    from yfpo.train.grpo import grpo

    d, q, ns = files
    mdir = save_tiny(tmp_path / "tiny", "llama", seed=0)
    cfg = cfg_for(
        tmp_path,
        q,
        model=str(mdir),
        neurons=str(ns),
        neuron_reward_weight=0.5,
        neuron_loss_weight=0.5,
        max_steps=2,
        lora=True,
        lora_r=4,
        lora_alpha=8,
    )
    out = grpo(cfg, callbacks=[StopAfter(1)])
    assert not (out / "train_done.json").exists() and (out / "checkpoints" / "checkpoint-1").exists()
    out = grpo(cfg)  # resumes at step 1
    done = json.loads((out / "train_done.json").read_text())
    assert done["steps"] == 2 and (out / "final" / "adapter_config.json").exists()
    assert not (out / "checkpoints").exists()  # pruned once finished
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    keys = set().union(*steps)
    for k in (
        "rewards/accuracy/mean",
        "rewards/neuron/mean",
        "neuron/phi",
        "neuron/pairs",
        "completions/mean_length",
        "completions/clipped_ratio",
    ):
        assert k in keys, k
    assert [r["step"] for r in rows if r.get("event") == "resume"] == [1]  # append-only, the replay marked
    import dataclasses

    from yfpo.resume import ResumeConflict

    with pytest.raises(ResumeConflict, match="neuron_reward_weight"):  # same folder, another config: refused
        grpo(dataclasses.replace(cfg, neuron_reward_weight=0.25))
    assert json.loads((out / "train_done.json").read_text()) == done  # and nothing it had was touched


def test_cli_grpo_keys_and_errors(capsys):
    from yfpo.cli import main

    assert main(["grpo", "--keys"]) == 0
    assert "neuron_loss_weight" in capsys.readouterr().out
    assert main(["grpo", "--neuron_reward_weight", "0.5", "--max_steps", "1"]) == 1
    assert "needs a NeuronSet" in capsys.readouterr().err
    assert main(["grpo", "/nonexistent.yaml"]) == 1
    assert main(["grpo", "--trl.learning_rate=1e-5", "--max_steps", "1"]) == 1
    assert "trl.learning_rate is set by yfpo from its own key: set lr instead" in capsys.readouterr().err
    assert main(["grpo", "--trl.report_to", "tensorboard", "--max_steps", "1"]) == 1  # the value is no CONFIG
    assert "give a trl option as --trl.report_to=VALUE" in capsys.readouterr().err


def test_neuron_reward_hand_off_from_generation_equals_direct_phi(files, tmp_path, monkeypatch):
    """The hand-off inside a real generation step: the ids the trainer generated reach NeuronReward (its prompt ids
    recorded by the trainer, the completions TRL passes), and the reward it returns equals the group-standardised phi
    of a hook-free forward over exactly the sequences the step returns (prompt + completion up to its mask)."""
    from yfpo.neurons.neuronset import NeuronSet

    d, q, ns_path = files
    tr = make(cfg_for(tmp_path, q, neurons=str(ns_path), neuron_reward_weight=0.5))
    seen = []
    real_call = NeuronReward.__call__

    def spy(self, *a, **kw):  # what the reward function returned to TRL
        seen.append(real_call(self, *a, **kw))
        return seen[-1]

    monkeypatch.setattr(NeuronReward, "__call__", spy)
    tr.model.train()
    torch.manual_seed(3)
    out = tr._generate_and_score_completions([dict(tr.train_dataset[i // G]) for i in range(2 * G)])
    assert len(seen) == 1 and len(seen[0]) == 2 * G
    with torch.no_grad():
        phi = direct_phi(tr.model, out, NeuronSet.load(ns_path))
    got = torch.tensor([float("nan") if v is None else v for v in seen[0]])
    for k in range(2):
        x = phi[k * G : (k + 1) * G]
        assert x.std() > 1e-6  # the completions differ in phi (a constant phi would standardise to 0 either way)
        torch.testing.assert_close(got[k * G : (k + 1) * G], (x - x.mean()) / (x.std() + 1e-4), rtol=1e-4, atol=1e-4)

"""Shared helpers for the tests/test_train_*.py files (tiny models, pair files, NeuronSets, an independent
hook-free forward pass), plus unit tests of the pure loss functions against their textbook formulas."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from yfpo.config import from_dict
from yfpo.models.tiny import tiny_model
from yfpo.neurons.neuronset import NeuronSet
from yfpo.train.config import TrainConfig

try:  # keep the test log readable
    import datasets

    datasets.disable_progress_bars()
except Exception:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and far faster than on two when the CPU is shared (import this
    fixture into a test module to apply it there; the previous setting is restored)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- data


def pair_rows(n: int = 8) -> list[dict]:
    """Plain pairs of varied (and unequal chosen/rejected) lengths."""
    rows = []
    for i in range(n):
        a, b = i + 3, 2 * i + 1
        rows.append(
            {
                "prompt": f"Tina has {a} apples and buys {b} more. How many apples does Tina have?",
                "chosen": f"She has {a} + {b} = {a + b} apples.\n#### {a + b}",
                "rejected": ("The answer is " + str(a * b) + ". ") * (1 + i % 3),
            }
        )
    return rows


def step_rows(n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = i + 4, i + 7
        rows.append(
            {
                "prompt": f"Ken has {a} books and gets {b} more. How many books?",
                "initial_reason_steps": f"Step 1: Ken starts with {a} books.\n",
                "chosen": f"Step 2: {a} + {b} = {a + b}.",
                "rejected": f"Step 2: {a} * {b} = {a * b}.",
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def write_neuronset(path: Path, model, k_per_layer: int = 6, seed: int = 0) -> NeuronSet:
    """A hand-made NeuronSet for a tiny model: k random neurons per layer, mixed-sign scores, made-up stats."""
    from yfpo.models import arch

    L, W = arch.neuron_shape(model)
    g = torch.Generator().manual_seed(seed)
    layers, idx = [], []
    for l in range(L):
        layers += [l] * k_per_layer
        idx += torch.randperm(W, generator=g)[:k_per_layer].tolist()
    K = len(layers)
    scores = torch.randn(K, generator=g)
    mean = 0.01 * torch.randn(K, generator=g)
    std = 0.02 + 0.05 * torch.rand(K, generator=g)
    prov = {
        "num_layers": L,
        "intermediate_size": W,
        "family": arch.get_arch(arch.unwrap(model)).family,
        "model": "tiny",
        "method": "hand-made test set",
    }
    ns = NeuronSet(layers, idx, scores, mean, std, prov)
    ns.save(path)
    return ns


# ----------------------------------------------------------------------------- trainers


def cfg_for(tmp_path: Path, pairs: Path, **kw) -> TrainConfig:
    base = dict(
        pairs=str(pairs),
        output_dir=str(tmp_path / "run"),
        lora=False,
        batch_size=2,
        max_steps=1,
        device="cpu",
        beta=0.1,
        max_length=128,
        logging_steps=1,
        warmup_ratio=0.0,
    )
    base.update(kw)
    return from_dict(TrainConfig, base)  # older short names (batch_size, lr, device, ...) read as TRL's


def perturb_(params, seed: int, scale: float = 0.02) -> None:
    """Add seeded noise in place (so the policy differs from its reference; LoRA B is no longer zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))


def make_yfpo(cfg: TrainConfig, family: str = "llama", seed: int = 0, perturb: bool = True, **tiny_kw):
    """A YFPOTrainer on a fresh tiny model; the trainable parameters are perturbed so policy != reference."""
    from yfpo.train.trainer import make_trainer

    model, tok = tiny_model(family, seed=seed, **tiny_kw)
    torch.manual_seed(1234)  # LoRA A initialisation
    tr, _ = make_trainer(cfg, model=model, tokenizer=tok)
    if perturb:
        perturb_([p for _, p in trainable(tr.model)], seed=99)
    return tr


def reference_ctx(tr):
    """(module computing the reference, context) exactly as the trainer defines the reference: the reference model
    when it has one, else the policy with its LoRA adapter disabled."""
    if tr.ref_model is not None:
        return tr.ref_model, contextlib.nullcontext()
    return tr.model, tr.model.disable_adapter()


def enable_gc(trainer) -> None:
    """Turn activation checkpointing on as transformers.Trainer.train() does (it is off until training starts)."""
    kw = dict(trainer.args.activation_checkpointing_kwargs or {})
    trainer.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw or None)
    trainer.model.train()
    assert trainer.model.is_activation_checkpointing


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def first_batch(trainer) -> dict:
    batch = next(iter(trainer.get_train_dataloader()))
    return {k: v.to("cpu") for k, v in batch.items()}


def loss_and_grads(trainer, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainable(model)}
    model.zero_grad(set_to_none=True)
    return float(loss), grads


def assert_grads_close(got: dict, want: dict, rtol: float = 1e-5, atol: float = 1e-6, skip=()) -> None:
    assert set(got) == set(want)
    checked = 0
    for n in want:
        if any(s in n for s in skip):
            continue
        torch.testing.assert_close(got[n], want[n], rtol=rtol, atol=atol, msg=lambda m, n=n: f"{n}: {m}")
        checked += 1
    assert checked > 0


# ----------------------------------------------------------------------------- independent forward


def manual_forward(causal, ids: torch.Tensor):
    """Hook-free forward of one unpadded sequence through a Llama/Qwen2-shaped model, piece by piece.

    Returns (logits (T, V), {layer: u (T, I)} the down-projection inputs act(gate(y)) * up(y), final hidden (T, D)).
    Uses the model's own submodules (so LoRA layers are included), but builds the causal mask, the rotary
    embeddings and the MLP product itself, so it does not depend on the trainer's hooks or on batching.
    """
    from yfpo.models import arch

    causal = arch.unwrap(causal)
    inner = causal.model
    T = ids.numel()
    h = inner.embed_tokens(ids[None])
    pos = torch.arange(T)[None]
    pe = inner.rotary_emb(h, pos)
    mask = torch.full((T, T), float("-inf")).triu(1)[None, None].to(h.dtype)
    us = {}
    for l, layer in enumerate(inner.layers):
        x = layer.input_layernorm(h)
        a = layer.self_attn(hidden_states=x, position_embeddings=pe, attention_mask=mask)[0]
        h = h + a
        y = layer.post_attention_layernorm(h)
        mlp = layer.mlp
        u = mlp.act_fn(mlp.gate_proj(y)) * mlp.up_proj(y)
        us[l] = u[0]
        h = h + mlp.down_proj(u)
    hf = inner.norm(h)
    logits = causal.lm_head(hf)[0]
    return logits, us, hf[0]


def sequences(batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The real (unpadded) tokens and completion mask of each row, whichever side the padding is on."""
    out = []
    for r in range(batch["input_ids"].shape[0]):
        keep = batch["attention_mask"][r].bool()
        out.append((batch["input_ids"][r][keep], batch["completion_mask"][r][keep]))
    return out


def direct_logp_phi(causal, batch: dict, ns: NeuronSet | None):
    """Sequence log-probs of the completions (2B,) and SPEC's phi (2B,), one unpadded sequence at a time.

    phi(x, y) = mean over (l, j) in N of s_lj * mean over response tokens t of (u_ljt - mu_lj) / sigma_lj.
    """
    logps, phis = [], []
    for ids, comp in sequences(batch):
        logits, us, _ = manual_forward(causal, ids)
        lp = torch.log_softmax(logits[:-1].float(), -1).gather(-1, ids[1:, None]).squeeze(-1)
        logps.append((lp * comp[1:]).sum())
        if ns is not None:
            resp = comp.bool()
            terms = []
            for k in range(len(ns)):
                u = us[int(ns.layers[k])][:, int(ns.indices[k])]
                z = (u[resp] - ns.mean[k]) / ns.std[k]
                terms.append(ns.signs[k] * z.mean())
            phis.append(torch.stack(terms).mean())
    return torch.stack(logps), (torch.stack(phis) if phis else None)


def left_pad(batch: dict, pad_id: int) -> dict:
    """Re-pad a (right-padded) collated batch on the left, with explicit position ids."""
    rows = sequences(batch)
    T = batch["input_ids"].shape[1]
    n = len(rows)
    ids = torch.full((n, T), pad_id, dtype=torch.long)
    att = torch.zeros((n, T), dtype=torch.long)
    comp = torch.zeros((n, T), dtype=torch.long)
    for r, (x, c) in enumerate(rows):
        ids[r, T - len(x) :] = x
        att[r, T - len(x) :] = 1
        comp[r, T - len(x) :] = c
    pos = (att.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": att, "completion_mask": comp, "position_ids": pos}


# ----------------------------------------------------------------------------- pure losses vs textbook formulas


def test_pairwise_losses_match_formulas():
    from yfpo.train.losses import aux_neuron_loss, pairwise_loss, yoke

    g = torch.Generator().manual_seed(0)
    c, r = torch.randn(5, generator=g), torch.randn(5, generator=g)
    lc, lr_ = torch.tensor([3.0, 4, 5, 6, 7]), torch.tensor([2.0, 9, 5, 1, 3])
    beta = 0.3
    sig = lambda x: 1 / (1 + math.exp(-x))
    for i in range(5):
        d = float(c[i] - r[i])
        want = {
            "sigmoid": -math.log(sig(beta * d)),
            "hinge": max(0.0, 1 - beta * d),
            "ipo": (float(c[i]) / float(lc[i]) - float(r[i]) / float(lr_[i]) - 1 / (2 * beta)) ** 2,
            "robust": (-(0.9) * math.log(sig(beta * d)) + 0.1 * math.log(sig(-beta * d))) / 0.8,
        }
        for lt, w in want.items():
            got = pairwise_loss(lt, c, r, beta, label_smoothing=0.1, chosen_len=lc, rejected_len=lr_)[i]
            assert abs(float(got) - w) < 1e-5, (lt, float(got), w)
    m = torch.randn(5, generator=g)
    gamma = 0.7
    ce, re_ = yoke(c, r, m, gamma, beta)
    torch.testing.assert_close(pairwise_loss("sigmoid", ce, re_, beta), -F.logsigmoid(beta * (c - r) + gamma * m))
    torch.testing.assert_close(aux_neuron_loss(m, gamma), -F.logsigmoid(gamma * m))
    with pytest.raises(ValueError, match="unknown loss_type"):
        pairwise_loss("nope", c, r, beta)


def test_manual_forward_matches_model():
    """The independent forward used as ground truth by the other tests reproduces the model's logits."""
    model, tok = tiny_model("llama", seed=0)
    ids = torch.tensor(tok("Tina has 3 apples. #### 3")["input_ids"])
    logits, us, _ = manual_forward(model, ids)
    with torch.no_grad():
        ref = model(ids[None]).logits[0]
    torch.testing.assert_close(logits.detach(), ref, rtol=1e-5, atol=1e-5)
    assert set(us) == {0, 1} and us[0].shape == (ids.numel(), 128)


def spy(obj, name: str) -> list:
    """Wrap obj.name (on the instance) so each call appends its arguments to the returned list."""
    calls, orig = [], getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return orig(*args, **kwargs)

    setattr(obj, name, wrapper)
    return calls


class StopAfter(TrainerCallback):
    """Stop training after `n` optimizer steps and save (a kill after that step's checkpoint)."""

    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.n:
            control.should_training_stop = True
            control.should_save = True
        return control

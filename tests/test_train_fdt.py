"""FDT (SPEC section 4): the loss value equals the plain loss; the LM-head weight gradient equals the analytic
sum over aligned response positions of (c_w - c_l)(h_w - h_l)^T (plus c h^T past the shorter response), computed
here independently from the hidden states and the softmax; hidden-state (all other) gradients equal the plain
ones; with tied embeddings and with LoRA; and the head never holds more than one chunk of full-vocabulary logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_train_common import (
    assert_grads_close,
    cfg_for,
    first_batch,
    loss_and_grads,
    make_yfpo,
    pair_rows,
    write_jsonl,
    write_neuronset,
)

from yfpo.models import arch


def _pair(tmp_path, family="llama", lora=False, gamma=0.0, neurons=None, **tiny_kw):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    kw = dict(lora=lora, gamma=gamma, neurons=neurons)
    plain = make_yfpo(cfg_for(tmp_path / "p", pairs, fdt=False, **kw), family=family, **tiny_kw)
    fdt = make_yfpo(cfg_for(tmp_path / "f", pairs, fdt=True, **kw), family=family, **tiny_kw)
    for (n, a), (_, b) in zip(plain.model.named_parameters(), fdt.model.named_parameters()):
        assert torch.equal(a, b), n
    return plain, fdt


def analytic_head_grads(tr, batch):
    """(dW_plain, dW_fdt) of the sigmoid DPO loss from hidden states and softmax, without the trainer."""
    causal = arch.unwrap(tr.model)
    B = batch["input_ids"].shape[0] // 2
    with torch.no_grad():
        h = getattr(causal, causal.base_model_prefix)(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state[:, :-1]
        ref = tr.ref_model
        ref_logits = ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    W = causal.get_output_embeddings().weight.detach()
    labels = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].float()
    z = (h @ W.t()).requires_grad_(True)
    logp = (torch.log_softmax(z, -1).gather(-1, labels[..., None]).squeeze(-1) * mask).sum(1)
    ref_logp = (torch.log_softmax(ref_logits, -1).gather(-1, labels[..., None]).squeeze(-1) * mask).sum(1)
    lr = logp - ref_logp
    loss = -F.logsigmoid(tr.beta * (lr[:B] - lr[B:])).mean()
    (c,) = torch.autograd.grad(loss, z)  # c = dL/dz at every position (zero off-response)
    dW_plain = torch.einsum("btv,btd->vd", c, h)
    dW_fdt = torch.zeros_like(W)
    for i in range(B):
        pw = mask[i].nonzero().flatten()
        pl = mask[i + B].nonzero().flatten()
        k = min(len(pw), len(pl))
        cw, cl = c[i, pw[:k]], c[i + B, pl[:k]]
        hw, hl = h[i, pw[:k]], h[i + B, pl[:k]]
        dW_fdt += (cw - cl).t() @ (hw - hl)  # SPEC eq. 8: dW = (c_w - c_l)(h_w - h_l)^T
        for row, pos in ((i, pw[k:]), (i + B, pl[k:])):  # the longer response's tail: partner padded with zeros
            dW_fdt += c[row, pos].t() @ h[row, pos]
    return float(loss), dW_plain, dW_fdt


def _head_name(tr):
    w = arch.unwrap(tr.model).get_output_embeddings().weight
    return next(n for n, p in tr.model.named_parameters() if p is w)


def test_fdt_full_finetuning(tmp_path):
    plain, fdt = _pair(tmp_path)
    batch = first_batch(plain)
    l_p, g_p = loss_and_grads(plain, batch)
    l_f, g_f = loss_and_grads(fdt, batch)
    assert l_f == pytest.approx(l_p, abs=1e-6)  # forward value unchanged
    head = _head_name(fdt)
    assert head.endswith("lm_head.weight")
    assert_grads_close(g_f, g_p, rtol=1e-5, atol=1e-7, skip=(head,))  # hidden-state gradients unchanged
    l_a, dW_plain, dW_fdt = analytic_head_grads(fdt, batch)
    assert l_a == pytest.approx(l_p, abs=1e-5)
    scale = float(dW_plain.abs().max())
    torch.testing.assert_close(g_p[head], dW_plain, rtol=1e-4, atol=1e-5 * scale)  # the analytic route is right
    torch.testing.assert_close(g_f[head], dW_fdt, rtol=1e-4, atol=1e-5 * scale)
    assert float((dW_fdt - dW_plain).abs().max()) > 0.05 * scale  # and FDT's gradient really differs
    assert fdt._metrics["train"]["fdt/aligned_tokens"][-1] > 0


def test_fdt_tied_embeddings(tmp_path):
    plain, fdt = _pair(tmp_path, family="qwen2", tie_word_embeddings=True)
    causal = arch.unwrap(fdt.model)
    assert causal.get_output_embeddings().weight is causal.get_input_embeddings().weight
    batch = first_batch(plain)
    l_p, g_p = loss_and_grads(plain, batch)
    l_f, g_f = loss_and_grads(fdt, batch)
    assert l_f == pytest.approx(l_p, abs=1e-6)
    emb = _head_name(fdt)
    assert "embed_tokens" in emb
    assert_grads_close(g_f, g_p, rtol=1e-5, atol=1e-7, skip=(emb,))
    _, dW_plain, dW_fdt = analytic_head_grads(fdt, batch)
    # the shared matrix gets the embedding gradient (unchanged) plus the head gradient (FDT's instead of the plain one)
    scale = float(dW_plain.abs().max())
    torch.testing.assert_close(g_f[emb] - g_p[emb], dW_fdt - dW_plain, rtol=1e-4, atol=1e-5 * scale)


def test_fdt_keeps_tied_embeddings_tied(tmp_path):
    """The decision for tied input/output embeddings (docs/scale.md, "FDT with tied embeddings"): the matrix stays
    one matrix. FDT replaces only its output-layer gradient (the test above); training does not untie it, and the
    saved final/ is a tied model again (one matrix on disk, tie_word_embeddings: true)."""
    from safetensors.torch import load_file

    from yfpo.models import load_model
    from yfpo.models.tiny import save_tiny
    from yfpo.train.trainer import train

    model_dir = save_tiny(tmp_path / "tiny", family="qwen2", seed=0, tie_word_embeddings=True)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2))
    out = train(cfg_for(tmp_path, pairs, model=str(model_dir), fdt=True, max_steps=1, lr=1e-2))
    saved = load_file(str(out / "final" / "model.safetensors"))
    assert not any(k.endswith("lm_head.weight") for k in saved)  # one matrix written
    before = load_file(str(model_dir / "model.safetensors"))
    emb = next(k for k in saved if k.endswith("embed_tokens.weight"))
    assert not torch.equal(saved[emb], before[emb])  # trained (by the head's FDT gradient and the embedding's)
    trained, _ = load_model(str(out / "final"))
    assert trained.config.tie_word_embeddings
    assert trained.get_output_embeddings().weight is trained.get_input_embeddings().weight


def test_fdt_refuses_lora_and_composes_with_yfpo(tmp_path):
    """LoRA freezes the head, so FDT would change nothing: refused. With full fine-tuning FDT composes with YFPO:
    same loss, a different head gradient, the neuron metrics logged."""
    from yfpo.models.tiny import tiny_model
    from yfpo.train.config import TrainConfig

    with pytest.raises(ValueError, match="fdt: true with lora: true would train exactly like fdt: false"):
        TrainConfig(model="m", pairs="p.jsonl", fdt=True, lora=True).validate()
    model, _ = tiny_model("llama", seed=0)
    write_neuronset(tmp_path / "n.json", model)
    plain, fdt = _pair(tmp_path, lora=False, gamma=1.0, neurons=str(tmp_path / "n.json"))
    batch = first_batch(plain)
    l_p, g_p = loss_and_grads(plain, batch)
    l_f, g_f = loss_and_grads(fdt, batch)
    assert l_f == pytest.approx(l_p, abs=1e-6)
    head = [n for n in g_p if "embed_tokens" in n or "lm_head" in n]
    assert head and any(not torch.allclose(g_f[n], g_p[n], atol=1e-6) for n in head)
    assert "neuron/margin" in fdt._metrics["train"]


def test_fdt_chunks_the_vocabulary_logits():
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from yfpo.train.fdt import fdt_token_logps

    V, D, T, chunk = 97, 8, 11, 4
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, T, D, generator=g, requires_grad=True)
    weight = torch.randn(V, D, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (4, T - 1), generator=g)
    mask = torch.zeros(4, T - 1, dtype=torch.long)
    mask[0, 3:9] = mask[1, 2:5] = mask[2, 4:10] = mask[3, 1:8] = 1
    labels = labels.masked_fill(mask == 0, -100)
    rows = []

    class Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[-1] == V and t.numel() != weight.numel():
                    rows.append(t.numel() // V)
            return out

    with Rec():
        lp, _ = fdt_token_logps(hidden, weight, None, labels, mask, chunk=chunk)
        lp.sum().backward()
    assert rows and max(rows) <= chunk
    n_valid = int(mask.sum())
    assert n_valid > 4 * chunk
    # the chunked result equals the one-shot computation
    lp_big, _ = fdt_token_logps(hidden.detach(), weight.detach(), None, labels, mask, chunk=10_000)
    torch.testing.assert_close(lp.detach(), lp_big)

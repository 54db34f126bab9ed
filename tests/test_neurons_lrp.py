"""AttnLRP rules are instance-scoped, forward-neutral and fully reversible."""

import pytest
import torch
import torch.nn as nn

from yfpo.models import arch
from yfpo.models.tiny import tiny_model
from yfpo.neurons.lrp import attnlrp

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3", "gpt2"]


def _ids(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 500, (2, 10), generator=g)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _instance_state(model):
    """Everything the rules could leave behind: instance attributes and hooks of every module."""
    out = {}
    for name, mod in model.named_modules():
        out[name] = (
            sorted(k for k in mod.__dict__ if k in ("forward", "_norm")),
            len(mod._forward_hooks),
            len(mod._forward_pre_hooks),
            len(mod._backward_hooks),
            getattr(mod, "attention_dropout", None),
        )
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_identical_and_gradients_restored(family):
    model, _ = tiny_model(family, seed=0)
    model.eval()
    ids = _ids()
    before = _instance_state(model)
    plain = model(ids).logits
    with attnlrp(model):
        assert _instance_state(model) != before  # the rules are really installed
        ruled = model(ids).logits
        ruled.sum().backward()
        lrp_grads = _grads(model)
    if family == "gpt2":  # LayerNorm written out as lxt does: float rounding only
        torch.testing.assert_close(ruled, plain, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(ruled, plain)
    assert _instance_state(model) == before
    model.zero_grad()
    model(ids).logits.sum().backward()
    after = _grads(model)
    fresh, _ = tiny_model(family, seed=0)
    fresh.eval()
    fresh(ids).logits.sum().backward()
    ref = _grads(fresh)
    assert after.keys() == ref.keys()
    for n in ref:
        assert torch.equal(after[n], ref[n]), n
    # the rules changed the backward pass while active
    assert any(not torch.allclose(lrp_grads[n], ref[n]) for n in ref)


def test_other_instance_untouched_inside_block():
    a, _ = tiny_model("llama", seed=0)
    b, _ = tiny_model("llama", seed=0)
    ids = _ids(1)
    b(ids).logits.sum().backward()
    ref = _grads(b)
    b.zero_grad()
    with attnlrp(a):
        b(ids).logits.sum().backward()
        inside = _grads(b)
    for n in ref:
        assert torch.equal(inside[n], ref[n])
    # no class-level change
    assert "forward" not in type(arch.mlp(b, 0)).__dict__ or type(arch.mlp(b, 0)).forward.__module__.startswith(
        "transformers"
    )


def test_restored_after_exception():
    model, _ = tiny_model("qwen3", seed=0)
    before = _instance_state(model)
    with pytest.raises(RuntimeError):
        with attnlrp(model):
            raise RuntimeError("boom")
    assert _instance_state(model) == before


def test_dropout_untouched_outside_block():
    model, _ = tiny_model("gpt2", seed=0, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)
    model.train()
    ids = _ids(2)
    with attnlrp(model):
        x1, x2 = model(ids).logits, model(ids).logits
        assert torch.equal(x1, x2)  # dropout is identity inside the block (as in lxt)
    torch.manual_seed(0)
    y1 = model(ids).logits
    y2 = model(ids).logits
    assert not torch.allclose(y1, y2)  # ... and active again outside
    assert not any("forward" in m.__dict__ for m in model.modules() if isinstance(m, nn.Dropout))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_mlp_and_norm_are_conservative(family):
    """Identity + uniform rules: relevance (x * grad) into the MLP equals relevance out of it; the same
    for the normalisation (stop-gradient variance); bias-free modules."""
    over = {"mlp_bias": False} if family == "llama" else {}
    model, _ = tiny_model(family, seed=3, **over)
    model.eval()
    if family == "gpt2":  # make the MLP linear maps bias-free
        for l in range(arch.num_layers(model)):
            for name in ("c_fc", "c_proj"):
                nn.init.zeros_(getattr(arch.mlp(model, l), name).bias)
            nn.init.zeros_(arch.layers(model)[1].ln_2.bias)
    saved = {}

    def pre(name):  # a fresh leaf as the module input: its grad is the module path only
        def f(mod, args):
            x = args[0].detach().requires_grad_(True)
            saved[name] = [x]
            return (x,) + tuple(args[1:])

        return f

    def post(name):
        def f(mod, args, out):
            out.retain_grad()
            saved[name].append(out)

        return f

    mlp = arch.mlp(model, 1)
    norm = arch.layers(model)[1].post_attention_layernorm if family == "llama" else arch.layers(model)[1].ln_2
    for name, mod in (("mlp", mlp), ("norm", norm)):  # one module at a time: their paths overlap
        hs = [mod.register_forward_pre_hook(pre(name)), mod.register_forward_hook(post(name))]
        with attnlrp(model):
            model(_ids(3)).logits[:, -1].max(-1).values.sum().backward()
        for h in hs:
            h.remove()
        x, y = saved[name]
        r_in, r_out = (x * x.grad).sum(), (y * y.grad).sum()
        assert r_out.abs() > 1e-6
        torch.testing.assert_close(r_in, r_out, rtol=1e-4, atol=1e-6, msg=name)

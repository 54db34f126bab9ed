"""Our AttnLRP neuron relevances match lxt 2.1 (the authors' implementation) on seeded tiny models.

The fixture (tests/fixtures/lxt/<family>/) was written by scripts/lxt_reference/ (see its README):
model weights + one batch from our side, reference.pt from lxt 2.1 + transformers 4.57.6 in a separate
environment. lxt itself is not needed here.
"""

from pathlib import Path

import pytest
import torch

from yfpo.models.tiny import tiny_model
from yfpo.neurons.relevance import batch_relevance, input_relevance

FIX = Path(__file__).parent / "fixtures" / "lxt"


def _load(family):
    d = FIX / family
    model, _ = tiny_model(family, seed=0)
    model.load_state_dict(torch.load(d / "model.pt"))
    model.eval()
    return model, torch.load(d / "batch.pt"), torch.load(d / "reference.pt")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_neuron_relevance_matches_lxt(family):
    model, batch, ref = _load(family)
    assert ref["versions"]["lxt"] == "2.1" and ref["versions"]["transformers"].startswith("4.57")
    rec, target = batch_relevance(model, batch, "attnlrp")
    torch.testing.assert_close(target, ref["target"], rtol=1e-4, atol=1e-5)
    assert rec.relevance.shape == ref["relevance"].shape
    scale = ref["relevance"].abs().max()
    torch.testing.assert_close(rec.relevance, ref["relevance"], rtol=1e-4, atol=1e-5 * scale)
    # the comparison is sharp enough to tell the rules from plain activation x gradient
    plain, _ = batch_relevance(model, batch, "actgrad")
    assert not torch.allclose(plain.relevance, ref["relevance"], rtol=1e-2, atol=1e-3 * scale)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_input_relevance_matches_lxt(family):
    model, batch, ref = _load(family)
    rel, target = input_relevance(model, batch, "attnlrp")
    torch.testing.assert_close(rel, ref["input_relevance"], rtol=1e-4, atol=1e-5)


def test_conservation_bias_free_model():
    """Sum of input-embedding relevance vs the target on the bias-free tiny Llama: as close as lxt gets.
    (AttnLRP is exactly conservative except through the softmax, so this is approximate; lxt reaches
    the error stored in the fixture, we must not be worse.)"""
    model, batch, ref = _load("llama")
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    rel, target = input_relevance(model, batch, "attnlrp")
    lxt_err = (ref["input_relevance"] - ref["target"]).abs()
    our_err = (rel - target).abs()
    assert torch.all(our_err <= lxt_err * 1.001 + 1e-5), (our_err, lxt_err)
    # and the relevance is a real decomposition of the target, not noise: same sign, same order of size
    assert torch.all(torch.sign(rel) == torch.sign(target))
    assert torch.all((rel - target).abs() / target.abs() < 0.5)
    # without the rules (plain gradient x input) conservation is much worse
    plain, _ = input_relevance(model, batch, "actgrad")
    assert (plain - target).abs().sum() > 2 * our_err.sum()

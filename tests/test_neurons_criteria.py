"""Stage-1 selection criteria (issue 12, item 2): diff, tstat, ratio, exclude_both."""

import math

import pytest
import torch

from yfpo.neurons.select import CRITERIA, criterion_score, math_score, ratio_score, select_top, strong_on_both, welch_t


def _stats(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, mean of squares) over the sample axis 0, as corpus_relevance stores them."""
    return samples.mean(0), (samples * samples).mean(0)


def test_diff_is_the_unchanged_math_score():
    m, c = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(criterion_score("diff", m, c), math_score(m, c))


def test_welch_t_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 2, 3, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(5, 2, 3, generator=g, dtype=torch.float64) * 2
    ma, sa = _stats(a)
    mb, sb = _stats(b)
    t = welch_t(ma, sa, 7, mb, sb, 5)
    for l in range(2):
        for j in range(3):
            x, y = a[:, l, j].tolist(), b[:, l, j].tolist()
            mx, my = sum(x) / 7, sum(y) / 5
            vx = sum((v - mx) ** 2 for v in x) / 6
            vy = sum((v - my) ** 2 for v in y) / 4
            assert t[l, j].item() == pytest.approx((mx - my) / math.sqrt(vx / 7 + vy / 5), rel=1e-5)


def test_tstat_prefers_a_consistent_neuron_over_a_noisy_one_with_a_larger_mean_difference():
    # neuron 0: math relevance always 1.0 vs contrast 0.0; neuron 1: math alternates 0 / 4 (mean 2) vs 0.
    math = torch.tensor([[[1.0, 0.0]], [[1.0, 4.0]], [[1.0, 0.0]], [[1.0, 4.0]]]).view(4, 1, 2)
    math = math + torch.tensor([0.0, 0.01, -0.01, 0.0]).view(4, 1, 1)  # non-zero variance for neuron 0
    con = torch.zeros(4, 1, 2) + torch.tensor([0.01, -0.01, 0.0, 0.0]).view(4, 1, 1)
    (mm, ms), (cm, cs) = _stats(math), _stats(con)
    diff = criterion_score("diff", mm, cm)
    t = criterion_score("tstat", mm, cm, math_sq_mean=ms, contrast_sq_mean=cs, n_math=4, n_contrast=4)
    assert diff[0, 1] > diff[0, 0]  # difference of means picks the noisy one
    assert t[0, 0] > t[0, 1]  # the t-statistic picks the consistent one


def test_ratio_penalises_neurons_relevant_on_both_corpora():
    m = torch.tensor([[1.0, 3.0, 0.0, 0.0, 0.0]])
    c = torch.tensor([[0.0, 1.5, 0.1, 0.2, 0.3]])  # median |c| = 0.2
    r = ratio_score(m, c)
    assert r[0, 0].item() == pytest.approx(1.0 / 0.2)
    assert r[0, 1].item() == pytest.approx(1.5 / 1.7)
    assert r[0, 0] > r[0, 1] and math_score(m, c)[0, 1] > math_score(m, c)[0, 0]
    assert torch.equal(torch.sign(r), torch.sign(math_score(m, c)))


def test_exclude_both_never_selects_a_neuron_strong_on_both():
    g = torch.Generator().manual_seed(1)
    m, c = torch.rand(4, 50, generator=g), torch.rand(4, 50, generator=g)
    m[2, 7], c[2, 7] = 10.0, 5.0  # top on both corpora, and the largest difference
    assert strong_on_both(m, c, 0.99)[2, 7]
    layers, idx = select_top(criterion_score("diff", m, c), 5)
    assert (2, 7) in set(zip(layers.tolist(), idx.tolist()))
    s = criterion_score("exclude_both", m, c, exclude_quantile=0.99)
    assert s[2, 7] == float("-inf")
    layers, idx = select_top(s, 5)
    assert (2, 7) not in set(zip(layers.tolist(), idx.tolist()))
    finite = torch.isfinite(s)
    assert torch.equal(s[finite], math_score(m, c)[finite])


def test_bad_criterion_and_missing_inputs_are_clear_errors():
    m = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="criterion must be one of"):
        criterion_score("best", m, m)
    with pytest.raises(ValueError, match="tstat"):
        criterion_score("tstat", m, m)
    with pytest.raises(ValueError, match="exclude_quantile"):
        criterion_score("exclude_both", m, m, exclude_quantile=1.5)
    with pytest.raises(ValueError, match=">= 2 samples"):
        welch_t(m, m, 1, m, m, 5)
    assert set(CRITERIA) == {"diff", "tstat", "ratio", "exclude_both"}


def test_find_config_default_is_diff_and_the_criterion_enters_the_stage_hash():
    # (NeuronSet v2 changed stage 1's statistics anyway, so old cached neuron stages rerun; no hash carve-out)
    from yfpo.config import to_dict
    from yfpo.neurons.config import NeuronsConfig
    from yfpo.pipeline import stage_hash

    d = to_dict(NeuronsConfig())
    assert d["criterion"] == "diff"
    assert stage_hash("neurons", dict(d, criterion="tstat"), {}) != stage_hash("neurons", d, {})

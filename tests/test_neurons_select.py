"""Selection of neurons from score grids."""

import pytest
import torch

from yfpo.neurons.select import math_score, resolve_k, select_random, select_top


def test_math_score_and_k():
    assert torch.equal(math_score(torch.ones(2, 3), torch.zeros(2, 3)), torch.ones(2, 3))
    with pytest.raises(ValueError, match="differ"):
        math_score(torch.ones(2, 3), torch.ones(3, 2))
    assert resolve_k(0.1, 100) == 10 and resolve_k(5, 100) == 5 and resolve_k(0.001, 100) == 1
    for bad in (0, -1, 2.5, 101):
        with pytest.raises(ValueError):
            resolve_k(bad, 100)


def test_select_top_global_and_per_layer():
    s = torch.tensor([[0.0, 5.0, 1.0, -2.0], [3.0, 4.0, -1.0, 0.5]])
    l, i = select_top(s, 3)
    assert list(zip(l.tolist(), i.tolist())) == [(0, 1), (1, 1), (1, 0)]
    l, i = select_top(s, 0.25)  # 2 of 8
    assert list(zip(l.tolist(), i.tolist())) == [(0, 1), (1, 1)]
    l, i = select_top(s, 1, mode="per_layer")
    assert sorted(zip(l.tolist(), i.tolist())) == [(0, 1), (1, 1)]
    l, i = select_top(s, 0.5, mode="per_layer")  # 2 per layer
    assert torch.bincount(l).tolist() == [2, 2]
    with pytest.raises(ValueError, match="global"):
        select_top(s, 1, mode="bogus")


def test_select_random_counts_seed_and_exclusion():
    counts = [3, 0, 5]
    l, i = select_random(counts, 10, seed=7)
    assert torch.bincount(l, minlength=3).tolist() == counts
    l2, i2 = select_random(counts, 10, seed=7)
    assert torch.equal(l, l2) and torch.equal(i, i2)
    l3, i3 = select_random(counts, 10, seed=8)
    assert not torch.equal(i, i3)
    ex = (torch.tensor([2, 2, 2, 2, 2]), torch.tensor([0, 1, 2, 3, 4]))
    l4, i4 = select_random(counts, 10, seed=1, exclude=ex)
    assert (i4[l4 == 2] >= 5).all()
    for lay in range(3):  # no duplicates within a layer
        assert len(set(i4[l4 == lay].tolist())) == counts[lay]
    with pytest.raises(ValueError, match="layer 2"):
        select_random([0, 0, 6], 10, seed=0, exclude=ex)

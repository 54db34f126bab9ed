"""Control NeuronSets: random (per-layer counts kept, disjoint, seeded, signs per layer) and flipped signs."""

import pytest
import torch

from yfpo.neurons.controls import KINDS, derive_control, flipped, normalise_kind, random_matched, selection_method
from yfpo.neurons.find import work_dir_for
from yfpo.neurons.neuronset import NeuronSet


def _source(tmp_path=None):
    L, W = 3, 16
    layers = torch.tensor([0, 0, 0, 1, 2, 2])
    indices = torch.tensor([1, 5, 9, 3, 0, 15])
    scores = torch.tensor([0.5, 0.4, -0.3, 0.2, 0.1, -0.05])
    g = torch.Generator().manual_seed(0)
    act_mean = torch.randn(L, W, generator=g)
    act_std = torch.rand(L, W, generator=g) + 0.5
    ns = NeuronSet(
        layers,
        indices,
        scores,
        act_mean[layers, indices],
        act_std[layers, indices],
        {"num_layers": L, "intermediate_size": W, "method": "attnlrp", "model": "m"},
    )
    if tmp_path is not None:
        p = ns.save(tmp_path / "neurons.json")
        wd = work_dir_for(p)
        wd.mkdir()
        torch.save({"act_mean_math": act_mean, "act_std_math": act_std}, wd / "grids.pt")
        return ns, act_mean, act_std, p
    return ns, act_mean, act_std


def test_random_keeps_counts_disjoint_deterministic_and_takes_stats_from_grids():
    ns, mean, std = _source()
    a = random_matched(ns, mean, std, seed=7)
    b = random_matched(ns, mean, std, seed=7)
    c = random_matched(ns, mean, std, seed=8)
    assert a.per_layer_counts() == ns.per_layer_counts() == [3, 1, 2]
    assert torch.equal(a.layers, b.layers) and torch.equal(a.indices, b.indices) and torch.equal(a.signs, b.signs)
    assert not torch.equal(a.indices, c.indices)
    src = set(zip(ns.layers.tolist(), ns.indices.tolist()))
    assert not src & set(zip(a.layers.tolist(), a.indices.tolist()))
    torch.testing.assert_close(a.mean, mean[a.layers, a.indices])
    torch.testing.assert_close(a.std_raw, std[a.layers, a.indices])
    for layer in range(3):  # each layer keeps the source's signs
        assert sorted(a.signs[a.layers == layer].tolist()) == sorted(ns.signs[ns.layers == layer].tolist())
    assert a.provenance["control"]["kind"] == "random" and a.provenance["control"]["seed"] == 7


def test_flipped_reverses_every_sign_and_keeps_the_rest():
    ns, _, _ = _source()
    f = flipped(ns)
    assert torch.equal(f.signs, -ns.signs)
    assert torch.equal(f.layers, ns.layers) and torch.equal(f.indices, ns.indices)
    assert torch.equal(f.mean, ns.mean) and torch.equal(f.std, ns.std)
    assert f.provenance["method"] == "control:flipped"


def test_derive_control_files(tmp_path):
    ns, mean, std, p = _source(tmp_path)
    r1 = NeuronSet.load(derive_control("random", p, tmp_path / "r1.json", seed=3))
    r2 = NeuronSet.load(derive_control("random", p, tmp_path / "r2.json", seed=3))
    assert torch.equal(r1.indices, r2.indices) and r1.per_layer_counts() == ns.per_layer_counts()
    assert r1.provenance["control"]["source"] == str(p)
    fl = NeuronSet.load(derive_control("flipped", p, tmp_path / "f.json"))
    assert torch.equal(fl.signs, -ns.signs)
    (work_dir_for(p) / "grids.pt").unlink()
    with pytest.raises(FileNotFoundError, match="grids"):
        derive_control("random", p, tmp_path / "r3.json")
    with pytest.raises(ValueError, match="selection"):
        derive_control("lape", p, tmp_path / "x.json")


def test_kinds():
    assert set(KINDS) == {"attnlrp", "random", "flipped", "gradxact", "lape"}
    assert normalise_kind("actgrad") == "gradxact" and selection_method("gradxact") == "actgrad"
    with pytest.raises(ValueError, match="randon"):
        normalise_kind("randon")
